//! Small nginx helpers the rest of the edge shares: its clock, its logs, its strings, directive
//! arguments and short replies. They know nothing of the module's own types.

pub mod conf_args;
pub mod log;
pub mod reply;
pub mod text;
pub mod time;
