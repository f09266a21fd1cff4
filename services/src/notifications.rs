//! The notification service: turns domain events into per-user notifications (stored, listed, marked
//! read) and pushes each to the user's `notifications:{user_id}` channel. (Lands with this issue.)
