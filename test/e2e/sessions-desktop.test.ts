import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import type { BrowserContext } from "playwright-core";
import { freePort, waitFor } from "@postroom/testkit";
import { launchChromium } from "../support/browser.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

/**
 * The agent desktop in a real browser (Debian's Chromium, driven by playwright-core; no browser
 * download), against the whole system: Dovecot → poller → archiver → asd-bridge → agent → smtp-sender.
 */
const AGENT_PASSWORD = "ann's desk password";
let w: E2eWorld;
let apiPort: number;
let browser: BrowserContext;
let chromium: Awaited<ReturnType<typeof launchChromium>>;

function hostileEmail(): Buffer {
  const lines = [
    "From: Ann Customer <ann@customer.example>",
    `To: ${SUPPORT}`,
    "Subject: My parcel never came",
    `Date: ${new Date().toUTCString().replace("GMT", "+0000")}`,
    "Message-ID: <parcel-1@customer.example>",
    "MIME-Version: 1.0",
    'Content-Type: multipart/alternative; boundary="b1"',
    "",
    "--b1",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "Hello, my parcel never came.",
    "--b1",
    "Content-Type: text/html; charset=utf-8",
    "",
    "<html><body><p id=\"greeting\">Hello, my <b>parcel</b> never came.</p>",
    "<img src=\"https://tracker.example/open.gif\" width=\"1\" height=\"1\">",
    "<img src=\"x\" onerror=\"window.top.document.title='PWNED-onerror';alert('onerror')\">",
    "<script>window.top.document.title='PWNED-script';alert('script')</script>",
    "</body></html>",
    "--b1--",
    "",
  ];
  return Buffer.from(lines.join("\r\n"), "utf8");
}

before(async () => {
  apiPort = await freePort();
  process.env.AGENT_ANN_PASSWORD = AGENT_PASSWORD;
  w = await E2eWorld.create("sessions-desktop", (c) => {
    c.agentApi = { host: "127.0.0.1", port: apiPort };
    const tenant = c.tenants[0]!;
    tenant.agents = [{ id: "ann", name: "Ann Agent", password: "env:AGENT_ANN_PASSWORD", queues: ["email"], maxSessions: 2 }];
  });
  await w.system.start();
  await w.mailboxReady();
  chromium = await launchChromium("chromium-profile");
  browser = chromium.browser;
});

after(async () => {
  await chromium?.close();
  await w?.close();
});

test("an agent logs in, opens an email whose script and onerror handler do not run, replies, and smtp-sender sends the reply", async () => {
  const page = await browser.newPage();
  const dialogs: string[] = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  const remote: string[] = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(`http://127.0.0.1:${apiPort}/`) && !r.url().startsWith("about:") && !r.url().startsWith("blob:")) remote.push(r.url());
  });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${apiPort}/`).catch(() => undefined))?.ok ?? false, { timeoutMs: 20_000, what: () => `agent desktop up\n${w.system.dump()}` });
  await page.goto(`http://127.0.0.1:${apiPort}/`);
  const title = await page.title();

  await page.getByLabel("Tenant").fill("acme");
  await page.getByLabel("Agent").fill("ann");
  await page.getByLabel("Password").fill(AGENT_PASSWORD);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await page.getByText("ann @ acme").waitFor({ timeout: 10_000 });
  await page.locator('input[data-queue="email"]').check();
  await page.getByText("queues: email").waitFor({ timeout: 10_000 });

  await w.dovecot.appendMessage(SUPPORT, hostileEmail());
  const entry = page.getByRole("button", { name: /My parcel never came/ });
  await entry.waitFor({ timeout: 45_000 });
  await entry.click();
  await page.locator("#subject").getByText("My parcel never came").waitFor({ timeout: 10_000 });

  const frame = page.frameLocator("iframe#html");
  await frame.locator("#greeting, p").first().waitFor({ timeout: 10_000 });
  assert.match(await frame.locator("body").innerText(), /Hello, my parcel never came/);
  const shown = await frame.locator("body").innerHTML();
  assert.doesNotMatch(shown, /onerror|<script|tracker\.example/i, "handlers, scripts and remote images are stripped");
  await page.waitForTimeout(500); // give any handler that slipped through the time to fire
  assert.deepEqual(dialogs, [], "no alert() ran");
  assert.equal(await page.title(), title, "neither the script nor the onerror handler changed the page");
  assert.deepEqual(remote, [], "no remote content was fetched");

  const before = w.smtp.messages.length;
  await page.getByLabel("reply text").fill("Dear Ann, your parcel is on its way again.");
  await page.getByRole("button", { name: "Reply", exact: true }).click();
  await page.getByText(/reply queued for sending/).waitFor({ timeout: 10_000 });

  const [sent] = (await w.smtp.waitForMessages(before + 1, 30_000)).slice(before);
  const parsed = await simpleParser(sent!.raw);
  assert.equal(parsed.inReplyTo, "<parcel-1@customer.example>");
  assert.equal(parsed.subject, "Re: My parcel never came");
  assert.deepEqual(sent!.envelope.rcptTo.filter((a) => a !== "records@acme.test"), ["ann@customer.example"]);
  assert.match(parsed.text ?? "", /your parcel is on its way again/);

  await page.getByRole("button", { name: "Close session" }).click();
  await page.getByText("session closed").waitFor({ timeout: 10_000 });
  const [session] = await w.rows<{ state: string; agent: string; outcome: string }>(
    "SELECT s.state, s.agent, s.outcome FROM sessions s JOIN messages m ON m.id = s.message_id WHERE m.rfc_message_id = '<parcel-1@customer.example>'",
  );
  assert.deepEqual(session, { state: "completed", agent: "ann", outcome: "answered" });
});
