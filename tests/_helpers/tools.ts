/**
 * Which system tools a test can use. Tests that need a missing tool are reported as skipped,
 * with the reason in their name, so the suite also runs on a machine with only Node and npm
 * (CI installs the tools, so there they always run).
 *
 * @module
 */

/** Is `command` on the PATH (runnable with `args`, by default `--version`)? */
export function hasCommand(command: string, args: string[] = ["--version"]): boolean {
  try {
    return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    // NotFound: the tool is not installed.
    return false;
  }
}
