//! EC2NodeClasses: the pure rules for resolving selector terms (`rules`) and the controller
//! that resolves them against AWS into status (`controller`).

pub mod controller;
pub mod rules;
