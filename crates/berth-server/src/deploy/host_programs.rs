//! Builds without cargo (a static site, a Node or Python service) run
//! their commands with the server's own toolchain: before the build, each
//! program the commands start is looked for, and one the server lacks is
//! named with the Debian package that has it.

use berth_spec::AppSpec;

/// Where programs are looked for: the instances' and builds' `PATH`.
const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Words before the program a command runs.
const PREFIXES: &[&str] = &[
    "exec", "env", "nohup", "time", "sudo", "!", "if", "then", "else", "elif", "do", "while",
    "until", "{",
];

/// Shell keywords and builtins: not programs.
const SHELL_WORDS: &[&str] = &[
    "cd", "command", "export", "true", "false", "set", "unset", "test", "[", "[[", "echo",
    "printf", "exit", "return", "if", "then", "else", "elif", "fi", "for", "while", "until", "do",
    "done", "case", "esac", "in", "function", "{", "}", ".", "source", "eval", "read", "shift",
    "ulimit", "umask", "wait", "trap", "pushd", "popd", "alias", "type", "hash", "local",
    "declare",
];

/// Tokens that end one command and start the next.
const SEPARATORS: &[&str] = &["&&", "||", "|", ";", "&", "(", ")"];

/// The programs `spec`'s build, release and process commands start that
/// are neither on the server's `PATH` nor in `extra_bin` (the `bin`
/// folders of the build's package root), each with what to install.
pub(super) fn missing_programs(spec: &AppSpec, extra_bin: &[std::path::PathBuf]) -> Vec<String> {
    let commands = spec
        .build
        .command
        .iter()
        .chain(&spec.deploy.release_command)
        .chain(spec.processes.values());
    let mut missing: Vec<String> = Vec::new();
    for program in commands.flat_map(|line| programs_of(line)) {
        let found = SEARCH_PATH
            .iter()
            .map(std::path::PathBuf::from)
            .chain(extra_bin.iter().cloned())
            .any(|dir| dir.join(&program).is_file());
        if !found
            && !missing
                .iter()
                .any(|known| known.starts_with(&format!("`{program}`")))
        {
            missing.push(match debian_package(&program) {
                Some(package) => format!("`{program}` (Debian: apt-get install {package})"),
                None => format!("`{program}`"),
            });
        }
    }
    missing
}

/// The programs a shell line starts: the first word of each of its
/// commands, past variable assignments, redirections, `exec`/`env` and
/// their flags — not paths (`./run`, `/opt/x`), keywords or builtins.
/// Quoted words are read as one.
fn programs_of(line: &str) -> Vec<String> {
    let mut programs = Vec::new();
    let mut at_start = true;
    for token in shell_tokens(line) {
        if SEPARATORS.contains(&token.as_str()) {
            at_start = true;
            continue;
        }
        if !at_start {
            continue;
        }
        let redirection = token.starts_with(['<', '>'])
            || token
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['<', '>']);
        let skipped = token.contains('=')
            || redirection
            || token.starts_with('-')
            || PREFIXES.contains(&token.as_str());
        if skipped {
            continue;
        }
        at_start = false;
        let plain = token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
        if plain && !SHELL_WORDS.contains(&token.as_str()) {
            programs.push(token);
        }
    }
    programs
}

/// Words of a shell line, with `&&`, `||`, `|`, `;`, `&` and parentheses
/// as tokens of their own (`2>&1` stays one word) and quotes kept inside
/// one word.
fn shell_tokens(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let flush = |word: &mut String, tokens: &mut Vec<String>| {
        if !word.is_empty() {
            tokens.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => quote = Some(c),
                c if c.is_whitespace() => flush(&mut word, &mut tokens),
                ';' | '(' | ')' => {
                    flush(&mut word, &mut tokens);
                    tokens.push(c.to_string());
                }
                '&' | '|' if word.ends_with(['>', '<']) => word.push(c),
                '&' | '|' => {
                    flush(&mut word, &mut tokens);
                    if chars.peek() == Some(&c) {
                        chars.next();
                        tokens.push(format!("{c}{c}"));
                    } else {
                        tokens.push(c.to_string());
                    }
                }
                c => word.push(c),
            },
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

fn debian_package(program: &str) -> Option<&'static str> {
    Some(match program {
        "node" | "nodejs" => "nodejs",
        "npm" | "npx" => "npm",
        "python3" => "python3",
        "python" => "python-is-python3",
        "pip" | "pip3" => "python3-pip",
        "go" => "golang-go",
        "ruby" | "gem" => "ruby",
        "bundle" | "bundler" => "ruby-bundler",
        "elixir" | "mix" => "elixir",
        "make" => "make",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_of_a_line_are_its_commands_first_words() {
        assert_eq!(
            programs_of(
                "cd web && NODE_ENV=production npm ci && npm run build 2>&1 | tee log; ./after"
            ),
            ["npm", "npm", "tee"]
        );
        assert_eq!(programs_of("exec gunicorn app:app"), ["gunicorn"]);
        assert_eq!(programs_of("env -i PATH=/bin node x.js"), ["node"]);
        assert_eq!(
            programs_of("command -v yarn || npm i -g yarn; if true; then make; else exit 1; fi"),
            ["npm", "make"]
        );
        assert_eq!(programs_of("sh -c 'npm run build && echo done'"), ["sh"]);
        assert_eq!(programs_of("(cd web && bun install) & wait"), ["bun"]);
    }

    #[test]
    fn a_program_the_server_lacks_is_named_with_its_package() {
        let mut spec = AppSpec::default();
        spec.build.command = Some("sh -c true && no-such-tool-here --build".into());
        spec.processes
            .insert("web".into(), "npx-that-is-not-there serve".into());
        let missing = missing_programs(&spec, &[]);
        assert_eq!(missing, ["`no-such-tool-here`", "`npx-that-is-not-there`"]);
        // A package root's bin folder counts.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("no-such-tool-here"), "").unwrap();
        let missing = missing_programs(&spec, &[root.path().to_path_buf()]);
        assert_eq!(missing, ["`npx-that-is-not-there`"]);
        spec.build.command = Some("python --version".into());
        spec.processes.clear();
        let missing = missing_programs(&spec, &[]);
        assert!(
            missing.is_empty()
                || missing == ["`python` (Debian: apt-get install python-is-python3)"],
            "{missing:?}"
        );
    }
}
