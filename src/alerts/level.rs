//! Warning levels: the four colours of China's early-warning system, from blue (IV,
//! general) to red (I, most serious), and "normal" below them.

use serde::{Deserialize, Serialize};

/// A warning level. Ordered: `Normal < Blue < Yellow < Orange < Red`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Level {
    #[default]
    Normal = 0,
    Blue = 1,
    Yellow = 2,
    Orange = 3,
    Red = 4,
}

impl Level {
    /// The four warning levels, lowest first.
    pub const WARNINGS: [Level; 4] = [Level::Blue, Level::Yellow, Level::Orange, Level::Red];

    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Blue => "blue",
            Level::Yellow => "yellow",
            Level::Orange => "orange",
            Level::Red => "red",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "normal" => Level::Normal,
            "blue" => Level::Blue,
            "yellow" => Level::Yellow,
            "orange" => Level::Orange,
            "red" => Level::Red,
            _ => return None,
        })
    }

    pub fn from_u8(n: u8) -> Option<Level> {
        Some(match n {
            0 => Level::Normal,
            1 => Level::Blue,
            2 => Level::Yellow,
            3 => Level::Orange,
            4 => Level::Red,
            _ => return None,
        })
    }

    /// The Roman numeral of a warning level (red is I); `None` for normal.
    pub fn numeral(self) -> Option<&'static str> {
        match self {
            Level::Normal => None,
            Level::Blue => Some("IV"),
            Level::Yellow => Some("III"),
            Level::Orange => Some("II"),
            Level::Red => Some("I"),
        }
    }

    /// 0 for blue .. 3 for red; `None` for normal.
    pub fn warning_index(self) -> Option<usize> {
        (self as usize).checked_sub(1)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_normal_to_red_and_round_trip_their_names() {
        let all = [
            Level::Normal,
            Level::Blue,
            Level::Yellow,
            Level::Orange,
            Level::Red,
        ];
        for w in all.windows(2) {
            assert!(w[0] < w[1]);
        }
        for l in all {
            assert_eq!(Level::parse(l.name()), Some(l));
            assert_eq!(Level::from_u8(l as u8), Some(l));
        }
        assert_eq!(Level::Red.numeral(), Some("I"));
        assert_eq!(Level::parse("purple"), None);
    }
}
