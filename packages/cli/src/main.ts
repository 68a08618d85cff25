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
  demo: { summary: "Run Postroom with local mail servers, a demo tenant, agents and customer emails", load: () => import("./commands/demo.js") },
  "demo send": { summary: "Send another customer email to the running demo", load: () => import("./commands/demo-send.js") },
  "demo inbox": { summary: "Show the demo customer's inbox, where the agents' replies land", load: () => import("./commands/demo-inbox.js") },
  reload: { summary: "Apply a changed archive quota, threshold or reserve to the running up/demo without a restart", load: () => import("./commands/reload.js") },
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
  audit: { summary: "Show one tenant's audit trail: who did what, when and from where", load: () => import("./commands/audit.js") },
  "auth sign-in": { summary: "Sign a delegated (Outlook.com / work account) mailbox in with a device code", load: () => import("./commands/auth-sign-in.js") },
  "test-auth": { summary: "Try a mailbox's credentials step by step and explain every failure", load: () => import("./commands/test-auth.js") },
};

process.exitCode = await dispatch(commands, process.argv.slice(2));
