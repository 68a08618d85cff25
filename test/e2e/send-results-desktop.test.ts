import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { BrowserContext, Page } from "playwright-core";
import { freePort, waitFor } from "@postroom/testkit";
import { launchChromium } from "../support/browser.js";
import { customerEmail } from "../support/mail.js";
import { CUSTOMER, SendWorld, SUPPORT } from "../support/send-world.js";

/**
 * What became of an agent's reply, in the desktop (Debian's Chromium), against the whole system
 * and a real Postfix delivering into Dovecot: a reply to an email with Reply-To reaches the
 * Reply-To address once; a reply to an address Postfix refuses (550 5.1.1) shows as failed with
 * the server's words; edited and sent again with that address in Cc, it shows as sent with the
 * refused recipient named.
 */
const AGENT_PASSWORD = "ann's results password";
const NOBODY = "nobody@customer.test";
let w: SendWorld;
let apiPort: number;
let browser: BrowserContext;
let chromium: Awaited<ReturnType<typeof launchChromium>>;
let page: Page;

before(async () => {
  apiPort = await freePort();
  w = await SendWorld.create("sendresults", {
    env: { AGENT_ANN_PASSWORD: AGENT_PASSWORD },
    // Postfix refuses this one recipient at RCPT time, as a real server refuses an unknown user.
    postfixMainCf: `smtpd_recipient_restrictions = check_recipient_access inline:{ { ${NOBODY} = 550 5.1.1 User unknown in virtual mailbox table } }, permit_sasl_authenticated, reject`,
    tweak: (c) => {
      c.agentApi = { host: "127.0.0.1", port: apiPort };
      const tenant = c.tenants[0]!;
      tenant.agents = [{ id: "ann", name: "Ann Agent", password: "env:AGENT_ANN_PASSWORD", queues: ["email"], maxSessions: 4 }];
      // Only the recipients the agent chose: a default CC would turn a refusal into a partial one.
      tenant.mailboxes[0]!.defaultCc = [];
      tenant.mailboxes[0]!.defaultBcc = [];
    },
  });
  await w.system.start();
  await w.mailboxReady();
  chromium = await launchChromium("chromium-results");
  browser = chromium.browser;
  page = await browser.newPage();
  await waitFor(async () => (await fetch(`http://127.0.0.1:${apiPort}/`).catch(() => undefined))?.ok ?? false, { timeoutMs: 20_000, what: () => `agent desktop up\n${w.system.dump()}` });
  await page.goto(`http://127.0.0.1:${apiPort}/`);
  await page.getByLabel("Tenant").fill("acme");
  await page.getByLabel("Agent").fill("ann");
  await page.getByLabel("Password").fill(AGENT_PASSWORD);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await page.getByText("ann @ acme").waitFor({ timeout: 10_000 });
  const queue = page.locator('input[data-queue="email"]');
  await queue.waitFor({ timeout: 10_000 });
  if (!(await queue.isChecked())) await queue.check();
});

after(async () => {
  await chromium?.close();
  await w?.close();
});

async function openSession(subject: string): Promise<void> {
  const entry = page.getByRole("button", { name: new RegExp(subject) });
  await entry.waitFor({ timeout: 45_000 });
  await entry.click();
  await page.locator("#subject").getByText(subject).waitFor({ timeout: 10_000 });
}

test("a reply to an email with Reply-To shows where it goes before sending, arrives at the Reply-To address once, and shows as sent", async () => {
  await w.archivedOriginal(customerEmail({ from: "webform@customer.test", to: SUPPORT, subject: "Contact form: parcel 88", messageId: "<form-88@customer.test>", extraHeaders: [`Reply-To: Ann Customer <${CUSTOMER}>`] }));
  await openSession("Contact form: parcel 88");
  assert.match(await page.locator("#headers").innerText(), /\(customer's Date header\)/, "the date shown is the customer's own");
  assert.equal(await page.locator("#flag").isVisible(), false, "human mail carries no flag");
  assert.match(await page.locator("#reply-targets").innerText(), new RegExp(`^Reply goes to ${CUSTOMER}\\.`), "the agent sees where the reply goes");
  assert.equal(await page.getByLabel("reply to").inputValue(), CUSTOMER);

  await page.getByLabel("reply text").fill("Dear Ann, parcel 88 is on its way.");
  await page.getByRole("button", { name: "Reply", exact: true }).click();
  await page.locator("#replies li.sent").getByText(`reply to ${CUSTOMER}`).waitFor({ timeout: 30_000 });

  await w.waitForMail(CUSTOMER, (m) => m.includes("Re: Contact form: parcel 88"));
  const [send] = await w.rows<{ envelope: { to: string[] } }>("SELECT envelope FROM sends WHERE kind = 'reply' AND envelope::text LIKE $1", [`%${CUSTOMER}%`]);
  assert.deepEqual(send!.envelope.to, [CUSTOMER], "to the Reply-To address only, not to the form's sender");
  assert.equal((await w.inbox(CUSTOMER)).filter((m) => m.toString("latin1").includes("Re: Contact form: parcel 88")).length, 1, "once");
});

test("a reply to an address Postfix refuses (550 5.1.1) shows as failed with the server's words; edited, with that address in Cc, it shows as sent with the refusal named", async () => {
  // Sent through a list tool with a date nobody can read: offered with the bulk flag, dated by its arrival.
  const raw = [`From: ${NOBODY}`, `To: ${SUPPORT}`, "Subject: Typo in my address", "Date: yesterday at noon, more or less", "Message-ID: <typo-1@customer.test>", "Precedence: bulk", "Content-Type: text/plain; charset=utf-8", "", "Please call me back.", ""];
  await w.archivedOriginal(Buffer.from(raw.join("\r\n")));
  await openSession("Typo in my address");
  assert.match(await page.locator("#flag").innerText(), /^bulk/, "the classification is shown as a flag");
  assert.match(await page.locator("#headers").innerText(), /\(received; unreadable Date header: yesterday at noon, more or less\)/, "and the date is said to be the received time");
  await page.getByLabel("reply text").fill("Dear customer, we could not find your order.");
  await page.getByRole("button", { name: "Reply", exact: true }).click();

  const failed = page.locator("#replies li.failed");
  await failed.waitFor({ timeout: 30_000 });
  const shown = await failed.innerText();
  assert.match(shown, /550 5\.1\.1 .*nobody@customer\.test.*User unknown in virtual mailbox table/, `the server's own words:\n${shown}`);
  assert.match(shown, /address does not exist/, "and what to do");
  const [row] = await w.rows<{ state: string; last_error: string }>("SELECT state, last_error FROM sends WHERE envelope::text LIKE $1", [`%${NOBODY}%`]);
  assert.equal(row!.state, "failed");

  // Edit puts the text and recipients back; the agent moves the bad address to Cc and adds the right one.
  await failed.getByRole("button", { name: "Edit" }).click();
  assert.equal(await page.getByLabel("reply text").inputValue(), "Dear customer, we could not find your order.");
  await page.getByLabel("reply to").fill(CUSTOMER);
  await page.getByLabel("reply cc").fill(NOBODY);
  await page.getByRole("button", { name: "Reply", exact: true }).click();
  const partial = page.locator("#replies li.sent");
  await partial.waitFor({ timeout: 30_000 });
  assert.match(await partial.innerText(), /refused: nobody@customer\.test: 550 5\.1\.1/);
  await w.waitForMail(CUSTOMER, (m) => m.includes("Re: Typo in my address"));
});

test("a reply Postfix accepts and the mailbox server then refuses comes back as a delivery report; the desktop shows the reply as bounced", async () => {
  // Not a Dovecot user: Postfix takes the reply (it relays everything), LMTP refuses it, and
  // Postfix mails a delivery report to the support mailbox, which Postroom reads like any mail.
  const GHOST = "ghost@customer.test";
  await w.archivedOriginal(customerEmail({ from: GHOST, to: SUPPORT, subject: "Ghost writes", messageId: "<ghost-1@customer.test>" }));
  await openSession("Ghost writes");
  await page.getByLabel("reply text").fill("Dear ghost, thank you.");
  await page.getByRole("button", { name: "Reply", exact: true }).click();
  const bounced = page.locator("#replies li.bounced");
  await bounced.waitFor({ timeout: 60_000 });
  const shown = await bounced.innerText();
  assert.match(shown, /returned later: 5\.1\.1/, shown);
  assert.match(shown, /check the address with the customer/);
  assert.ok(await bounced.getByRole("button", { name: "Retry" }).isVisible());
});
