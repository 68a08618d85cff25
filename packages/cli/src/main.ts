#!/usr/bin/env node
// The `postroom` command. The only file of the CLI with side effects: it runs the command named on
// the command line and sets the exit code. Commands live in ./commands/, one module each.
import { dispatch, type CommandTable } from "./dispatch.js";

/**
 * The command table. To add a command, write `./commands/<name>.ts` exporting
 * `run(argv: string[]): Promise<number>` (argv: the arguments after the command name; the result is
 * the exit code, and the command prints its own `--help`), then register it here. Two-word names
 * ("config check") form a group that `postroom config --help` lists.
 */
const commands: CommandTable = {
  up: { summary: "Run every Postroom service on this machine for one config file", load: () => import("./commands/up.js") },
  "config check": {
    summary: "Validate a config file: print it with secrets redacted, then every warning or error",
    load: () => import("./commands/config-check.js"),
  },
  "config import-softdial": {
    summary: "Convert a Softdial Workflow config.xml into postroom.yaml and postroom.env",
    load: () => import("./commands/config-import-softdial.js"),
  },
  // Reserved for teammates' commands; uncomment when the module exists:
  status: { summary: "Show every mailbox's state, owner, last check, backlog and last error; flag stalled ones", load: () => import("./commands/status.js") },
  "test-auth": { summary: "Try a mailbox's credentials step by step and explain every failure", load: () => import("./commands/test-auth.js") },
};

process.exitCode = await dispatch(commands, process.argv.slice(2));
