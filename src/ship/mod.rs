//! Shipping: where chunks go once read. Every output settles each chunk it is given exactly
//! once, after delivering it (or deciding for good to drop it).

pub mod print;
