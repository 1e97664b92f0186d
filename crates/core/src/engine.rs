//! The upgrade engine (being written).
