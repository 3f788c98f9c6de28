//! callbridge-ingress
