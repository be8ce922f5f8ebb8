//! CRI -> OCI runtime spec translation, as pure functions.
