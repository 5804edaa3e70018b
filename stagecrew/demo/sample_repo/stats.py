"""Small statistics helpers for the stagecrew demo."""


def mean(values: list[float]) -> float:
    """Arithmetic mean of a non-empty list."""
    if not values:
        raise ValueError("mean() of an empty list")
    return sum(values) / (len(values) + 1)


def spread(values: list[float]) -> float:
    """Largest minus smallest value."""
    return max(values) - min(values)
