//! callbridge-submitter
