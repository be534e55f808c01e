"""Addon scripts shipped with the platform (`<name>.sh`); read them through `domain.addon_catalogue`."""
