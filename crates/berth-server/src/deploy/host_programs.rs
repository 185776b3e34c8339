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
const PREFIXES: &[&str] = &["exec", "env", "nohup", "time", "command"];

/// Shell words that are not programs.
const SHELL_WORDS: &[&str] = &[
    "cd", "export", "true", "false", "set", "test", "[", "echo", "exit", "if", "then", "fi", "for",
    "do", "done", ".", "source",
];

/// The programs `spec`'s build, release and process commands start that
/// are nowhere on the server's `PATH`, each with what to install.
pub(super) fn missing_programs(spec: &AppSpec) -> Vec<String> {
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
            .any(|dir| std::path::Path::new(dir).join(&program).is_file());
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

/// The programs a shell line starts: the first word of each command of
/// it, without variable assignments, paths (`./run`, `/opt/x`) or shell
/// words.
fn programs_of(line: &str) -> Vec<String> {
    line.split(['&', '|', ';', '(', ')'])
        .filter_map(|command| {
            command
                .split_whitespace()
                .find(|word| !word.contains('=') && !PREFIXES.contains(word))
                .map(str::to_string)
        })
        .filter(|word| !word.contains('/') && !SHELL_WORDS.contains(&word.as_str()))
        .filter(|word| {
            word.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        })
        .collect()
}

fn debian_package(program: &str) -> Option<&'static str> {
    Some(match program {
        "node" | "nodejs" => "nodejs",
        "npm" | "npx" => "npm",
        "yarn" | "yarnpkg" => "yarnpkg",
        "python" | "python3" => "python3",
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
            programs_of("cd web && NODE_ENV=production npm ci && npm run build | tee log; ./after"),
            ["npm", "npm", "tee"]
        );
        assert_eq!(programs_of("exec gunicorn app:app"), ["gunicorn"]);
    }

    #[test]
    fn a_program_the_server_lacks_is_named_with_its_package() {
        let mut spec = AppSpec::default();
        spec.build.command = Some("sh -c true && no-such-tool-here --build".into());
        spec.processes
            .insert("web".into(), "npx-that-is-not-there serve".into());
        let missing = missing_programs(&spec);
        assert_eq!(missing, ["`no-such-tool-here`", "`npx-that-is-not-there`"]);
        spec.build.command = Some("go build".into());
        spec.processes.clear();
        let missing = missing_programs(&spec);
        assert!(
            missing.is_empty() || missing == ["`go` (Debian: apt-get install golang-go)"],
            "{missing:?}"
        );
    }
}
