/** `postroom demo send "subject"`: one more customer email to the running demo's support mailbox. */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { EXIT_USAGE } from "../dispatch.js";
import { sendAsCustomer } from "./demo.js";
import { DEMO, openDemo } from "./demo-setup.js";

export const help = `Usage: postroom demo send "subject" [--to support|sales] [--text TEXT] [--data-dir DIR]

Sends an email from the demo customer (${DEMO.customer}) through the demo's Postfix to its support
(or sales) mailbox; it becomes a new session in the agent desktop within seconds.`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { to: { type: "string" }, text: { type: "string" }, "data-dir": { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
    });
  } catch (error) {
    process.stderr.write(`postroom demo send: ${(error as Error).message}\n\n${help}\n`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const subject = parsed.positionals.join(" ").trim();
  const to = parsed.values.to ?? "support";
  if (!subject || (to !== "support" && to !== "sales")) {
    process.stderr.write(`postroom demo send: ${subject ? `--to ${to}: choose support or sales` : "give the subject"}\n\n${help}\n`);
    return EXIT_USAGE;
  }
  const demo = await openDemo("demo send", parsed.values["data-dir"]);
  if (!demo) return 1;
  const { info, customerPassword } = demo;
    const stamp = new Date().toISOString();
  try {
    const [id] = await sendAsCustomer(info.host, info.submissionPort, await readFile(info.caBundle), { address: DEMO.customer, password: customerPassword }, [
      {
        shows: "a test email",
        to: to === "sales" ? DEMO.sales : DEMO.support,
        subject,
        messageId: `<demo-${Date.now()}-${process.pid}@customer.test>`,
        text: parsed.values.text ?? `Hello,\n\nThis is a test email sent with \`postroom demo send\` at ${stamp}.\n\nAlex`,
      },
    ]);
    process.stdout.write(`sent "${subject}" from ${DEMO.customer} to ${to === "sales" ? DEMO.sales : DEMO.support} (${id}); watch it arrive at ${info.desktopUrl}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`postroom demo send: ${(error as Error).message}\n  fix: is the demo running? start it with \`pnpm postroom demo\`\n`);
    return 1;
  }
}
