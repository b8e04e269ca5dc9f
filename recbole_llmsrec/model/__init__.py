"""Models of the plugin, laid out like ``recbole.model``."""
