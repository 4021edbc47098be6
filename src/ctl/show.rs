//! `memifctl show ...`: renders memifd state.
