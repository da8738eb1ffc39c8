//! The crate's module graph has no cycle: every `crate::`, `super::` and
//! `self::` path in src/ (in `use` trees and inline, e.g.
//! `crate::domain::SystemUuid::parse`) and every path through a child module
//! a file declares is an edge from the file's module to the deepest module
//! the path names. A cycle is reported with one line per edge and where it
//! is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. `["depot", "writer"]`; the crate root is empty.
type Module = Vec<String>;

/// One source file: its module and its text.
struct Source {
    module: Module,
    file: String,
    text: String,
}

/// An edge and the first place it is taken.
#[derive(Debug)]
struct Edge {
    file: String,
    line: usize,
    path: String,
}

fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        // The binary is a crate of its own; it reaches the library as `pxeconf::`.
        "main.rs" if parts.is_empty() => return None,
        "mod.rs" => {}
        name => parts.push(name.strip_suffix(".rs")?.to_owned()),
    }
    Some(parts)
}

fn sources(src: &Path) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            Some(Source {
                module: module_of(src, &f)?,
                file: f.strip_prefix(src).unwrap().display().to_string(),
                text: std::fs::read_to_string(&f).unwrap(),
            })
        })
        .collect()
}

/// The text with comments and string/char literals blanked (newlines kept,
/// so line numbers stay right): a path in a doc comment or a message is not
/// a dependency.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            let is_char = next == Some('\\') || b.get(i + 2) == Some(&'\'');
            if is_char {
                let mut j = i + 1;
                if b.get(j) == Some(&'\\') {
                    j += 2;
                }
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                for _ in i..=j.min(b.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{self, d}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    // `X as Y` renames X: keep the rename visible after whitespace is gone.
    let tree = tree.replace(" as ", "@");
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, tree: &str, out: &mut Vec<String>) {
        if let Some(open) = tree.find('{') {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut parts = Vec::new();
            for (i, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[start..]);
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                go(&format!("{prefix}{head}"), part, out);
            }
        } else {
            let path = format!("{prefix}{}", tree.split('@').next().unwrap_or(tree));
            out.push(path.strip_suffix("::self").unwrap_or(&path).to_owned());
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every module path, for resolving a path to its deepest module.
fn known(sources: &[Source]) -> BTreeSet<Module> {
    sources.iter().map(|s| s.module.clone()).collect()
}

/// The module a path names: its base, then as many segments as are modules.
fn resolve(
    path: &str,
    here: &Module,
    children: &BTreeSet<String>,
    known: &BTreeSet<Module>,
) -> Option<Module> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut module: Module;
    let mut rest = &segs[..];
    match segs.first()? {
        &"crate" => {
            module = Vec::new();
            rest = &segs[1..];
        }
        &"self" => {
            module = here.clone();
            rest = &segs[1..];
        }
        &"super" => {
            module = here.clone();
            while rest.first() == Some(&"super") {
                module.pop()?;
                rest = &rest[1..];
            }
        }
        first if children.contains(*first) => module = here.clone(),
        _ => return None,
    }
    for seg in rest {
        let mut next = module.clone();
        next.push((*seg).to_owned());
        if known.contains(&next) {
            module = next;
        } else {
            break;
        }
    }
    Some(module)
}

/// Every edge of the module graph, with where it is first taken.
fn edges(sources: &[Source]) -> BTreeMap<(Module, Module), Edge> {
    let known = known(sources);
    let mut edges = BTreeMap::new();
    for source in sources {
        let code = code_only(&source.text);
        // Child modules this file declares (`mod x;` or inline `mod x {`),
        // which its code may name without `self::`.
        let mut children = BTreeSet::new();
        for (i, _) in code.match_indices("mod ") {
            if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = code[i + 4..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                children.insert(name);
            }
        }
        // Inline modules shift what `super::` and `self::` mean inside them.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut pending_inline: Option<String> = None;
        let mut line = 1;
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        let mut add = |path: &str, here: &Module, line: usize| {
            let Some(target) = resolve(path, here, &children, &known) else {
                return;
            };
            if target == source.module {
                return;
            }
            edges
                .entry((source.module.clone(), target))
                .or_insert_with(|| Edge {
                    file: source.file.clone(),
                    line,
                    path: path.to_owned(),
                });
        };
        while i < chars.len() {
            let c = chars[i];
            if c == '\n' {
                line += 1;
            }
            if c == '{' {
                depth += 1;
                if let Some(name) = pending_inline.take() {
                    inline.push((name, depth));
                }
            } else if c == '}' {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            } else if c == ';' {
                pending_inline = None;
            }
            let word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
            if !word_start || !(c.is_alphabetic() || c == '_') {
                i += 1;
                continue;
            }
            let word: String = chars[i..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .collect();
            let mut here = source.module.clone();
            here.extend(inline.iter().map(|(n, _)| n.clone()));
            if word == "mod" {
                let rest: String = chars[i + 3..].iter().take(80).collect();
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                pending_inline = Some(name);
                i += 3;
            } else if word == "use" {
                let end = chars[i..].iter().position(|c| *c == ';').unwrap_or(0) + i;
                let tree: String = chars[i + 3..end].iter().collect();
                for path in expand_use(&tree) {
                    add(&path, &here, line);
                }
                line += tree.matches('\n').count();
                i = end;
            } else {
                // A path: the word and every `::segment` after it.
                let mut j = i + word.len();
                let mut path = word.clone();
                while chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                    let seg: String = chars[j + 2..]
                        .iter()
                        .take_while(|c| c.is_alphanumeric() || **c == '_')
                        .collect();
                    if seg.is_empty() {
                        break;
                    }
                    path.push_str("::");
                    path.push_str(&seg);
                    j += 2 + seg.len();
                }
                if path.contains("::") {
                    add(&path, &here, line);
                }
                i = j;
            }
        }
    }
    edges
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<(Module, Module), Edge>) -> Vec<Vec<Module>> {
    let mut graph: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
        graph.entry(to).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(v: &'a Module, g: &BTreeMap<&'a Module, Vec<&'a Module>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &g[v] {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let low = s.low[w].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(v, &graph, &mut state);
        }
    }
    state.out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn report(sources: &[Source]) -> Vec<String> {
    let edges = edges(sources);
    cycles(&edges)
        .into_iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let mut lines = vec![format!(
                "cycle among {}:",
                component.iter().map(name).collect::<Vec<_>>().join(", ")
            )];
            for ((from, to), e) in &edges {
                if members.contains(from) && members.contains(to) {
                    lines.push(format!(
                        "  {} -> {} ({}:{} `{}`)",
                        name(from),
                        name(to),
                        e.file,
                        e.line,
                        e.path
                    ));
                }
            }
            lines.join("\n")
        })
        .collect()
}

fn fake(module: &str, text: &str) -> Source {
    Source {
        module: module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        file: format!("{module}.rs"),
        text: text.to_owned(),
    }
}

#[test]
fn the_crate_has_no_module_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = sources(&src);
    assert!(
        sources.len() > 20,
        "found only {} source files",
        sources.len()
    );
    let found = report(&sources);
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_every_kind_of_path() {
    // An inline path through a use-imported module, a grouped use tree, a
    // bare child module path and `super::` each close a cycle it must see.
    let cases = [
        (
            fake("a", "fn f() { let _ = crate::b::Thing::new(); }"),
            fake("b", "use crate::{x::Y, a::{self, Z}};"),
        ),
        (
            fake("p", "mod q;\nfn f() { q::go() }"),
            fake("p::q", "use super::Shared;"),
        ),
        (
            fake("a", "use crate::b;\n// crate::c::X in a comment"),
            fake("b", "pub fn f() { super::a::g() }"),
        ),
    ];
    for (one, two) in cases {
        let label = format!("{} / {}", one.text, two.text);
        let found = report(&[fake("", "mod a; mod b; mod p; mod x;"), one, two]);
        assert_eq!(found.len(), 1, "{label}: {found:?}");
    }
    // Paths in comments, strings and test modules' `super::` do not count.
    let quiet = [
        fake("", "mod a; mod b;"),
        fake(
            "a",
            "/// crate::b::X\nconst S: &str = \"crate::b::Y\";\nuse crate::b;",
        ),
        fake(
            "b",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::b::f;\n}",
        ),
    ];
    assert!(report(&quiet).is_empty(), "{:?}", report(&quiet));
}
