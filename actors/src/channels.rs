//! Channels: named fan-out streams with offsets, history and presence; subscribers are bounded queues.
//! (Lands with the multi-service issue.)
