"""Persistent memory: markdown layers, their search index, the task tree, and context rebuild.

Modules (plain library: nothing here imports ray or litellm, so agent actors stay light):

* ``layers`` - the markdown files (project/global memory, checkpoint, notes) and their paths;
* ``index`` - SQLite FTS5 search over those files and the archived conversation;
* ``tasks`` - the task ledger (T1, T1.1 …) with per-task progress files;
* ``tokens`` - token estimates, calibration against provider usage, window thresholds;
* ``context`` - rebuilding a model's context from memory under a token budget;
* ``checkpoint`` - prompt, merge and fallback logic for the checkpoint writer;
* ``messages`` - OpenAI-format message helpers shared by the above.
"""
