/**
 * `postroom reload`: asks the `up` / `demo` running from this folder to apply a changed config
 * without restarting anything. `up` passes it on as SIGHUP to the services that reload (today the
 * archiver: quota, warning threshold, free-space reserve, alert recipients). Outside `up` (a
 * container, a system service), send SIGHUP to the archiver process yourself.
 */
import { parseArgs } from "node:util";
import { EXIT_USAGE } from "../dispatch.js";
import { findRunState } from "./run-state.js";

export const help = `Usage: postroom reload

Makes the running \`postroom up\` (or \`demo\`) of this folder apply a changed config without a
restart: the archiver re-reads archive.quotaGb, warnPercentLeft, minFreeBytes and the alert
recipients, and a pause the new settings lift ends at once. Other changes need a restart.
Elsewhere (Kubernetes, systemd): send SIGHUP to the archiver.`;

export async function run(argv: string[], cwd = process.cwd()): Promise<number> {
  try {
    const { values } = parseArgs({ args: argv, options: { help: { type: "boolean", short: "h" } } });
    if (values.help) {
      process.stdout.write(`${help}\n`);
      return 0;
    }
  } catch (error) {
    process.stderr.write(`postroom reload: ${(error as Error).message}\n\n${help}\n`);
    return EXIT_USAGE;
  }
  const found = findRunState(cwd);
  if (!found) {
    process.stderr.write("postroom reload: no running `postroom up` or `demo` found from this folder\n  fix: run it where up runs, or send SIGHUP to the archiver process\n");
    return 1;
  }
  process.kill(found.state.pid, "SIGUSR2");
  process.stdout.write(`asked postroom up (pid ${found.state.pid}, config ${found.state.config}) to reload; its log says what was reloaded\n`);
  return 0;
}
