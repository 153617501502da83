//! TODO
use super::{Row, Sizes};
pub async fn rows(_sizes: Sizes) -> Vec<Row> {
    Vec::new()
}
