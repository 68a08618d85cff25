import { parseArgs } from "node:util";
import { allMailboxes, ConfigError, loadConfig } from "@postroom/config";
import { MailboxStatus, names as namesOf } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { EXIT_USAGE } from "../dispatch.js";
import { formatTable, STATUS_COLUMNS, statusLine, type StatusRow } from "./status-table.js";

export const help = `Usage: postroom status [--config FILE] [--tenant ID] [--json]

Shows every configured mailbox as imap-poller last reported it: state (connecting, idle, polling,
backing-off, needs-admin, paused), the replica that owns it, the last completed check, the last
message, the backlog, and the last error with the server's words and the fix. A mailbox that has
not completed a check within three check intervals is shown as STALLED, whatever it last said.

Reads the mailbox-status bucket in NATS (nats.url and nats.namespace from the config; NATS_URL
overrides). Exits 0 when every mailbox is fine, 1 when one is stalled or needs an administrator
(for scripts and cron checks), 2 on a usage error.

Options:
  -c, --config FILE   the configuration (default: $POSTROOM_CONFIG)
  -t, --tenant ID     only this tenant's mailboxes
      --json          one JSON object per mailbox instead of the table
  -h, --help          show this help
`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: "string", short: "c" },
        tenant: { type: "string", short: "t" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    process.stderr.write(`postroom status: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    process.stdout.write(help);
    return 0;
  }
  let config;
  try {
    config = await loadConfig(process.env, parsed.values.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`postroom status: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
  const names = namesOf(config.nats.namespace);
  let nc;
  try {
    nc = await connectNats({ url: config.nats.url, name: "postroom-status" });
  } catch (e) {
    process.stderr.write(`postroom status: cannot reach NATS at ${config.nats.url}: ${(e as Error).message}\n  fix: start NATS or set NATS_URL\n`);
    return 1;
  }
  try {
    const kv = await openKv(nc, names.buckets.mailboxStatus, { replicas: config.nats.replicas });
    const rows: StatusRow[] = [];
    for (const { tenant, mailbox } of allMailboxes(config)) {
      if (parsed.values.tenant && tenant.id !== parsed.values.tenant) continue;
      const entry = await kv.get(names.mailboxKey(tenant.id, mailbox.id));
      const status = entry?.value.length ? MailboxStatus.safeParse(entry.json()) : undefined;
      rows.push({
        tenant: tenant.id,
        mailbox: mailbox.id,
        protocol: mailbox.inbound.protocol,
        checkIntervalSeconds: mailbox.inbound.checkIntervalSeconds,
        status: status?.success ? status.data : undefined,
      });
    }
    const now = new Date();
    const lines = rows.map((r) => statusLine(r, now));
    if (parsed.values.json) {
      for (const [i, r] of rows.entries()) {
        process.stdout.write(`${JSON.stringify({ tenant: r.tenant, mailbox: r.mailbox, stalledOrNeedsAdmin: lines[i]!.attention, status: r.status ?? null })}\n`);
      }
    } else {
      process.stdout.write(formatTable(STATUS_COLUMNS, lines.map((l) => l.cells)));
    }
    return lines.some((l) => l.attention) ? 1 : 0;
  } finally {
    await nc.close();
  }
}
