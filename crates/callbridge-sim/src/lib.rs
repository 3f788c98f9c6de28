//! callbridge-sim
