pub mod term_model;
fn main() {}
