"""notifyhub core: settings, models, errors, events and domain operations (no HTTP)."""
