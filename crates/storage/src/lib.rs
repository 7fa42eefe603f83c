//! Durable storage for Flotilla (being written).
