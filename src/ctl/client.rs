//! `memifctl client`: a memif slave for troubleshooting.
