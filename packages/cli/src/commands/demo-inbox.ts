/** `postroom demo inbox`: the demo customer's mailbox, where the agents' replies land. */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ImapFlow } from "imapflow";
import { EXIT_USAGE } from "../dispatch.js";
import { DEMO, openDemo } from "./demo-setup.js";
import { formatTable } from "./status-table.js";

export const help = `Usage: postroom demo inbox [--json] [--data-dir DIR]

Lists the demo customer's (${DEMO.customer}) inbox over IMAP: the replies and forwards agents sent
from the desktop, oldest first, with date, sender, subject and the first line of the text.`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { json: { type: "boolean" }, "data-dir": { type: "string" }, help: { type: "boolean", short: "h" } } });
  } catch (error) {
    process.stderr.write(`postroom demo inbox: ${(error as Error).message}\n\n${help}\n`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const demo = await openDemo("demo inbox", parsed.values["data-dir"]);
  if (!demo) return 1;
  const { info, customerPassword } = demo;
  const client = new ImapFlow({
    host: info.host,
    port: info.imapPort,
    secure: false,
    doSTARTTLS: true,
    tls: { ca: await readFile(info.caBundle) },
    auth: { user: DEMO.customer, pass: customerPassword },
    logger: false,
  });
  client.on("error", () => undefined);
  const rows: Array<{ date: string; from: string; subject: string; inReplyTo: string; firstLine: string }> = [];
  try {
    await client.connect();
    const lock = await client.getMailboxLock("INBOX", { readOnly: true });
    try {
      if (client.mailbox !== false && client.mailbox.exists > 0) {
        for await (const m of client.fetch("1:*", { envelope: true, bodyParts: ["1"], internalDate: true })) {
          const text = m.bodyParts?.get("1")?.toString("utf8") ?? "";
          rows.push({
            date: (m.internalDate instanceof Date ? m.internalDate : new Date()).toISOString().replace("T", " ").slice(0, 19),
            from: m.envelope?.from?.[0]?.address ?? "",
            subject: m.envelope?.subject ?? "",
            inReplyTo: m.envelope?.inReplyTo ?? "",
            firstLine: text.split(/\r?\n/).find((l) => l.trim() !== "")?.trim().slice(0, 60) ?? "",
          });
        }
      }
    } finally {
      lock.release();
    }
  } catch (error) {
    process.stderr.write(`postroom demo inbox: ${(error as Error).message}\n  fix: is the demo running? start it with \`pnpm postroom demo\`\n`);
    return 1;
  } finally {
    await client.logout().catch(() => client.close());
  }
  if (parsed.values.json) {
    for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
  } else if (rows.length === 0) {
    process.stdout.write(`${DEMO.customer}'s inbox is empty: reply to a session in the desktop (${info.desktopUrl}) and run this again\n`);
  } else {
    process.stdout.write(`${DEMO.customer}'s inbox (${rows.length}):\n`);
    process.stdout.write(formatTable(["RECEIVED (UTC)", "FROM", "SUBJECT", "TEXT"], rows.map((r) => [r.date, r.from, r.subject, r.firstLine])));
  }
  return 0;
}
