//! Finds the line of a key path (`tenants.acme.auth.key`) in the YAML text, so
//! that errors found after parsing can still say where to look. yaml_serde
//! already locates its own errors; this covers the checks done in `validate`.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders `[tenants, acme, auth]` as `tenants.acme.auth`, `[clients, 0]` as `clients[0]`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Seg::Key(_) = seg {
            if !out.is_empty() {
                out.push('.');
            }
        }
        out.push_str(&seg.to_string());
    }
    out
}

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

/// Line and column (both 1-based) of the deepest part of `path` found in `src`:
/// the key itself when it exists, else its closest existing parent.
pub fn locate(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let mut events = Events::default();
    Parser::new_from_str(src).load(&mut events, false).ok()?;
    let ev = &events.0;
    // Skip StreamStart and DocumentStart to reach the root node.
    let root = ev
        .iter()
        .position(|(e, _)| matches!(e, Event::MappingStart(..) | Event::SequenceStart(..) | Event::Scalar(..)))?;
    let mark = find(ev, root, path, None)?;
    Some((mark.line(), mark.col() + 1))
}

fn find(ev: &[(Event, Marker)], at: usize, path: &[Seg], best: Option<Marker>) -> Option<Marker> {
    let Some((seg, rest)) = path.split_first() else {
        return best.or(Some(ev[at].1));
    };
    match (&ev[at].0, seg) {
        (Event::MappingStart(..), Seg::Key(want)) => {
            let mut i = at + 1;
            while !matches!(ev.get(i)?.0, Event::MappingEnd) {
                let key_mark = ev[i].1;
                let value = skip(ev, i)?;
                if matches!(&ev[i].0, Event::Scalar(k, ..) if k == want) {
                    return find(ev, value, rest, Some(key_mark));
                }
                i = skip(ev, value)?;
            }
            best
        }
        (Event::SequenceStart(..), Seg::Index(want)) => {
            let mut i = at + 1;
            for _ in 0..*want {
                if matches!(ev.get(i)?.0, Event::SequenceEnd) {
                    return best;
                }
                i = skip(ev, i)?;
            }
            if matches!(ev.get(i)?.0, Event::SequenceEnd) {
                return best;
            }
            // A block mapping's start is marked after its first key; point at that key instead.
            let mark = match (&ev[i].0, ev.get(i + 1)) {
                (Event::MappingStart(..), Some((Event::Scalar(..), key_mark))) => *key_mark,
                _ => ev[i].1,
            };
            find(ev, i, rest, Some(mark))
        }
        _ => best,
    }
}

/// Index just past the node that starts at `at`.
fn skip(ev: &[(Event, Marker)], at: usize) -> Option<usize> {
    match ev.get(at)?.0 {
        Event::MappingStart(..) | Event::SequenceStart(..) => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match ev.get(i)?.0 {
                    Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                    Event::MappingEnd | Event::SequenceEnd => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => Some(at + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "listen: x\ntenants:\n  acme:\n    auth:\n      model: oauth2\n      key: v\nclients:\n  - name: a\n  - name: b\n    tenants: [acme]\n";
        assert_eq!(locate(src, &[k("listen")]), Some((1, 1)));
        assert_eq!(locate(src, &[k("tenants"), k("acme"), k("auth"), k("key")]), Some((6, 7)));
        assert_eq!(locate(src, &[k("clients"), Seg::Index(1), k("tenants")]), Some((10, 5)));
        // A missing leaf falls back to its parent.
        assert_eq!(locate(src, &[k("tenants"), k("acme"), k("environment")]), Some((3, 3)));
        assert_eq!(render(&[k("clients"), Seg::Index(1), k("tenants")]), "clients[1].tenants");
    }
}
