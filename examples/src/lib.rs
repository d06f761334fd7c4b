//! Example programs live beside this file, one per file.
