//! Reads a large `tenants:` table a slice at a time.
//!
//! yaml_serde collects every event of a document before it deserializes the
//! first value: about 12 events of ~100 bytes per tenant, in one vector that
//! doubles as it grows. At 100,000 tenants that vector (and the copy made
//! while it doubles) is what took a start or a reload to 372 MiB. Parsed in
//! slices of [`SLICE`] entries, the events of one slice are alive at a time.
//!
//! Only the common shape is sliced: a top-level block `tenants:` whose
//! entries all start at one indentation. A slice is a run of whole entries,
//! cut from the text as it is, so within a slice the parser sees exactly
//! what it would have seen in the whole file. Anything else (a flow table,
//! a line that fits no entry, a slice that does not parse, an alias to an
//! anchor in another slice, a name in two slices) returns `None`, and the
//! caller parses the whole document the usual way; that way also gives the
//! usual error message with its line, so slicing never changes a result.

use std::collections::BTreeMap;

use super::raw::{RawConfig, RawTenant};

/// Entries per slice: ~2.5 MB of parser events at a time.
pub const SLICE: usize = 2048;

/// The config with its tenant table read in slices of `per_slice` entries,
/// or `None` when the table is small or not in the shape slicing handles.
pub fn parse(text: &str, per_slice: usize) -> Option<RawConfig> {
    let table = find_table(text)?;
    if table.entries.len() <= per_slice {
        return None;
    }
    // The file up to the table must be whole on its own: a `tenants:` line
    // inside a quoted value that runs on at column 0 is not the table.
    yaml_serde::from_str::<yaml_serde::Value>(&text[..table.key_line]).ok()?;
    // The rest of the file, without the table: the table's key and lines
    // are cut out, so the other keys keep their text and their order.
    let rest = format!("{}{}", &text[..table.key_line], &text[table.end..]);
    let mut raw: RawConfig = yaml_serde::from_str(&rest).ok()?;
    if !raw.tenants.is_empty() {
        // A second `tenants:` key: the whole parse says what is wrong.
        return None;
    }
    let mut tenants = BTreeMap::new();
    let mut starts = table.entries.iter().step_by(per_slice).peekable();
    while let Some(&from) = starts.next() {
        let to = starts.peek().map_or(table.end, |&&next| next);
        let slice: BTreeMap<String, RawTenant> = yaml_serde::from_str(&text[from..to]).ok()?;
        for (name, tenant) in slice {
            if tenants.insert(name, tenant).is_some() {
                return None;
            }
        }
    }
    raw.tenants = tenants;
    Some(raw)
}

/// Where the table is: the start of its `tenants:` line, the start of each
/// entry's first line, and the end of its last line.
#[derive(Debug, PartialEq)]
struct Table {
    key_line: usize,
    entries: Vec<usize>,
    end: usize,
}

fn find_table(text: &str) -> Option<Table> {
    let mut lines = lines_with_offsets(text);
    let key_line = lines.by_ref().find(|(_, line)| is_table_key(line))?.0;
    let mut entries = Vec::new();
    let mut indent = None;
    let mut end = text.len();
    for (at, line) in lines {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let depth = line.len() - content.len();
        if depth == 0 {
            // The next top-level key (or a document marker): the table ended.
            end = at;
            break;
        }
        let entry_indent = *indent.get_or_insert(depth);
        if depth == entry_indent {
            // A new entry, unless it is not a plain `name:` mapping key.
            if content.starts_with(['-', '?', '\t', '&', '*', '!', '|', '>', '{', '[']) {
                return None;
            }
            entries.push(at);
        } else if depth < entry_indent {
            return None;
        }
        // Deeper lines belong to the entry above them.
    }
    (!entries.is_empty()).then_some(Table { key_line, entries, end })
}

/// `tenants:` at the top level with its value on the lines below (block
/// style); a comment may follow. `tenants: {...}` or an anchor is not sliced.
fn is_table_key(line: &str) -> bool {
    line.strip_prefix("tenants:")
        .map(|after| after.trim_end_matches(['\r', '\n']).trim_start_matches(' '))
        .is_some_and(|after| after.is_empty() || after.starts_with('#'))
}

/// Each line with its byte offset, the line ending included.
fn lines_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').scan(0, |at, line| {
        let start = *at;
        *at += line.len();
        Some((start, line.trim_end_matches(['\n', '\r'])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretSource;

    /// What a parse produced, secrets included (Debug redacts them).
    fn fingerprint(raw: &RawConfig) -> String {
        let mut out = format!("{raw:?}");
        for (name, t) in &raw.tenants {
            for s in [&t.auth.key, &t.auth.refresh_token, &t.auth.client_secret, &t.auth.access_token] {
                if let Some(SecretSource::Inline(v)) = s {
                    out.push_str(&format!("\n{name}={v}"));
                }
            }
        }
        out
    }

    fn header() -> String {
        "listen: 127.0.0.1:8080\nenvironments:\n  staging: { base_url: http://127.0.0.1:9 }\n".into()
    }

    fn block_tenants(n: usize) -> String {
        let mut s = String::from("tenants:\n");
        for i in 0..n {
            s.push_str(&format!(
                "  t{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: ik_key_{i:05} }}\n"
            ));
        }
        s
    }

    /// Slicing gives what the one-parse path gives, or declines.
    fn same_as_whole(text: &str, per_slice: usize) -> Option<()> {
        let sliced = parse(text, per_slice)?;
        let whole: RawConfig = yaml_serde::from_str(text).expect("the whole document parses");
        assert_eq!(fingerprint(&sliced), fingerprint(&whole), "sliced vs whole for:\n{text}");
        Some(())
    }

    #[test]
    fn a_block_table_is_read_in_slices_with_the_same_result() {
        let text = format!("{}{}access_log: {{ format: off }}\n", header(), block_tenants(10));
        for per_slice in [1, 3, 9] {
            assert!(same_as_whole(&text, per_slice).is_some(), "sliced at {per_slice}");
        }
        assert!(parse(&text, 10).is_none(), "a table no larger than a slice takes the usual path");
        let raw = parse(&text, 3).expect("sliced");
        assert_eq!(raw.tenants.len(), 10);
        assert_eq!(raw.access_log.and_then(|a| a.format).as_deref(), Some("off"), "keys after the table are read");
    }

    #[test]
    fn comments_blank_lines_nested_blocks_and_block_scalars_stay_with_their_entry() {
        let text = format!(
            "{}tenants:   # the table\n\n  a:\n    # a comment\n    environment: staging\n\n    auth:\n      model: standalone_api_key\n      key: \"sk_a\"\n    rewrites:\n      - from: /x\n        to: |-\n          /y\n  # between entries\n  b:\n    environment: staging\n    auth: {{ model: oauth2, client_id: c, client_secret: s,\n      refresh_token: r }}\n  'c d':\n    environment: staging\n    auth: {{ model: integrated_api_key, key: k }}\n# after\nworkers: 2\n",
            header()
        );
        for per_slice in [1, 2] {
            assert!(same_as_whole(&text, per_slice).is_some(), "sliced at {per_slice}:\n{text}");
        }
        let raw = parse(&text, 1).expect("sliced");
        assert_eq!(raw.tenants.keys().collect::<Vec<_>>(), ["a", "b", "c d"]);
        assert_eq!(raw.workers, Some(2));
    }

    #[test]
    fn shapes_it_does_not_handle_fall_back_to_the_whole_parse() {
        let h = header();
        let declined = [
            // a flow table
            format!("{h}tenants: {{ a: {{ environment: staging, auth: {{ model: integrated_api_key, key: k }} }} }}\n"),
            // an anchor on the table
            format!("{h}tenants: &t\n{}", &block_tenants(3)["tenants:\n".len()..]),
            // an alias to an anchor in another slice
            format!(
                "{h}tenants:\n  a:\n    environment: staging\n    auth: &auth {{ model: integrated_api_key, key: k }}\n  b:\n    environment: staging\n    auth: *auth\n"
            ),
            // the same name in two slices
            format!("{h}{}  t0:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: again }}\n", block_tenants(3)),
            // a second table key
            format!("{h}{}{}", block_tenants(3), block_tenants(2)),
            // a line less indented than the entries
            format!("{h}tenants:\n    a:\n      environment: staging\n      auth: {{ model: integrated_api_key, key: k }}\n  b: {{}}\n"),
            // a quoted value that runs on at the entries' indentation
            format!(
                "{h}tenants:\n  a:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: \"k\n  b: 1\" }}\n  c:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: k }}\n"
            ),
            // an entry that is not a key
            format!("{h}tenants:\n  - a\n  - b\n"),
            // a quoted value that runs on at column 0, across what looks like the table
            format!("default_tenant: \"t0\n{}\"\n{h}", block_tenants(3)),
        ];
        for text in &declined {
            assert!(parse(text, 1).is_none(), "sliced what it should not:\n{text}");
        }
    }

    #[test]
    fn the_tenants_word_elsewhere_is_not_the_table() {
        // `clients[].tenants` is indented: only a top-level key is the table.
        let text = format!("{}clients:\n  - name: app\n    tenants:\n      - t0\n{}", header(), block_tenants(4));
        assert!(same_as_whole(&text, 2).is_some());
        assert_eq!(parse(&text, 2).expect("sliced").clients[0].tenants, ["t0"]);
    }

    /// One entry in one of the styles a hand-written or generated table uses.
    fn entry(i: usize, style: u8) -> String {
        let name = if style & 1 == 0 { format!("t{i}") } else { format!("\"tenant {i}\"") };
        let mut out = format!("  {name}:");
        if style & 2 != 0 {
            out.push_str("   # a note");
        }
        out.push('\n');
        if style & 4 != 0 {
            out.push_str(&format!(
                "    environment: staging\n    auth:\n      model: standalone_api_key\n      key: 'sk_{i}'\n"
            ));
        } else {
            out.push_str(&format!(
                "    environment: production\n    auth: {{ model: integrated_api_key, key: ik_{i} }}\n"
            ));
        }
        if style & 8 != 0 {
            out.push_str("    rewrites:\n    - from: /a\n      to: >-\n        /b\n\n    # trailing comment\n");
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn any_mix_of_entry_styles_slices_to_the_whole_parse(
            styles in proptest::collection::vec(0u8..16, 2..40),
            per_slice in 1usize..8,
            after in proptest::bool::ANY,
        ) {
            let mut text = header();
            text.push_str("tenants:\n");
            for (i, style) in styles.iter().enumerate() {
                text.push_str(&entry(i, *style));
            }
            if after {
                text.push_str("workers: 3\n");
            }
            if styles.len() > per_slice {
                proptest::prop_assert!(same_as_whole(&text, per_slice).is_some(), "declined:\n{}", text);
            }
        }
    }

    #[test]
    fn crlf_line_endings_slice_too() {
        let text = format!("{}{}", header(), block_tenants(5)).replace('\n', "\r\n");
        assert!(same_as_whole(&text, 2).is_some());
    }
}
