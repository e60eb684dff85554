"""Storage layer: see storage.repository for the functions the app and trainer call."""
