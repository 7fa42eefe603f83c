//! Flotilla cluster simulator (being written).
