//! callbridge-persister
