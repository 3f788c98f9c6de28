//! One module per page. Each page handler reads through `callbridge-ops` (or Postgres
//! directly for what only the console shows) and renders with `crate::view`; each action
//! handler checks the session's CSRF token and role first, then calls the same
//! `callbridge-ops` function as the CLI.

pub mod assets;
pub mod calls;
pub mod campaigns;
pub mod dead_letters;
pub mod login;
pub mod review;
pub mod services;
