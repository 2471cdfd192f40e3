//! Man pages of the two binaries, generated from their clap definitions: one page for
//! the command and one per subcommand (`fuotactl-campaign-create(1)`), as the top page's
//! SUBCOMMANDS section refers to them. The package installs them.

use std::path::Path;

/// Writes the pages of `command` and of every visible subcommand into `directory`, in
/// man `section`; returns the files written.
pub fn write_all(
    mut command: clap::Command,
    section: &'static str,
    directory: &Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(directory)?;
    // `build` gives subcommands their display names ("fuotactl-campaign").
    command.build();
    let mut written = Vec::new();
    write_page(&command, section, directory, &mut written)?;
    Ok(written)
}

fn write_page(
    command: &clap::Command,
    section: &'static str,
    directory: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_string();
    let path = directory.join(format!("{name}.{section}"));
    let mut bytes = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section(section)
        .render(&mut bytes)?;
    std::fs::write(&path, bytes)?;
    written.push(path);
    for subcommand in command.get_subcommands() {
        if subcommand.is_hide_set() || subcommand.get_name() == "help" {
            continue;
        }
        write_page(subcommand, section, directory, written)?;
    }
    Ok(())
}
