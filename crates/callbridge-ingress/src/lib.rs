//! callbridge-ingress: receives signed callbacks over HTTP and publishes each one,
//! confirmed, to RabbitMQ before answering 200.

pub mod publisher;
pub mod supervisor;
