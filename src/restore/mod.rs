//! Restoring a session from an image.
