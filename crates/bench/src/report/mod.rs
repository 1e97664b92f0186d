//! Writing summaries out: JSON (one object per run) and a self-contained
//! HTML page with SVG charts drawn by plotters.

pub mod chart;
pub mod html;
pub mod json;
