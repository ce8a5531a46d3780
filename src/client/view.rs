use super::model::Model;
use ratatui::Frame;
pub fn draw(_frame: &mut Frame, _model: &Model) {}
