pub mod graph;
pub mod openai;
