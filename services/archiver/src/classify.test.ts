import assert from "node:assert/strict";
import { test } from "node:test";
import type { Classification } from "@postroom/contracts";
import { addressesIn, classifyAutomatic, isPostroomMessageId, type HeaderList } from "./classify.js";

/**
 * Header sets as real systems send them (Exchange/Outlook, Gmail, Postfix, Sieve vacation,
 * mailing-list managers, ticketing systems, newsletters, people's odd clients), each with the
 * verdict and the reason Postroom must give. Written by hand from mail seen in the wild; the
 * addresses are renamed.
 */
const MAILBOX = { loopToken: "acme/support", addresses: ["support@acme.test", "help@acme.test"] };

interface Case {
  name: string;
  headers: string;
  subject?: string;
  verdict: Classification;
  /** A passage of the reason (null: no reason at all). */
  reason: RegExp | null;
}

const cases: Case[] = [
  // People, including odd but human headers.
  { name: "a plain Thunderbird message", headers: "From: Ann Customer <ann@customer.example>\nTo: support@acme.test\nSubject: Where is my order?\nMessage-ID: <1@customer.example>\nUser-Agent: Mozilla Thunderbird", verdict: "human", reason: null },
  { name: "Auto-Submitted: no (sent by a human)", headers: "From: ann@customer.example\nAuto-Submitted: no (sent by a human)\nSubject: hello", verdict: "human", reason: /Auto-Submitted: no/ },
  { name: "Auto-Submitted: NO in capitals", headers: "From: ann@customer.example\nAuto-Submitted: NO\nSubject: hi", verdict: "human", reason: /Auto-Submitted: NO/ },
  { name: "Auto-Submitted: no with a nested comment", headers: "From: ann@customer.example\nAuto-Submitted: no (really (a person))\nSubject: hi", verdict: "human", reason: /Auto-Submitted: no/ },
  { name: "Auto-Submitted: no beats an Outlook X-Auto-Response-Suppress", headers: "From: bob@customer.example\nAuto-Submitted: no\nX-Auto-Response-Suppress: All\nSubject: meeting", verdict: "human", reason: /Auto-Submitted: no/ },
  { name: "Auto-Submitted: no beats a vacation-looking subject", headers: "From: bob@customer.example\nAuto-Submitted: no\nReturn-Path: <bob@customer.example>", subject: "Out of office next week?", verdict: "human", reason: /Auto-Submitted: no/ },
  { name: "a person asking about out-of-office hours", headers: "From: carl@customer.example\nReturn-Path: <carl@customer.example>", subject: "Out of office hours support?", verdict: "human", reason: /looks automatic, but no header says so/ },
  { name: "Outlook human mail with DR/RN suppression only", headers: "From: dora@customer.example\nX-Auto-Response-Suppress: DR, RN, NRN\nX-MS-Has-Attach: yes\nThread-Index: AQHZ", subject: "Invoice", verdict: "human", reason: null },
  { name: "a customer replying to an agent's reply (In-Reply-To is ours)", headers: "From: ann@customer.example\nIn-Reply-To: <0123456789abcdef0123456789abcdef.postroom@acme.test>\nReferences: <1@customer.example> <0123456789abcdef0123456789abcdef.postroom@acme.test>", subject: "Re: Where is my order?", verdict: "human", reason: null },
  { name: "a customer whose address merely contains ours", headers: "From: support@acme.test.customer.example\nReply-To: notsupport@acme.test", subject: "hello", verdict: "human", reason: null },
  { name: "a display name that spells our address", headers: 'From: "support@acme.test" <eve@customer.example>', subject: "hello", verdict: "human", reason: null },
  { name: "a comment in From that spells our address", headers: "From: eve@customer.example (support@acme.test)", subject: "hello", verdict: "human", reason: null },
  { name: "Gmail human mail with ARC and DKIM headers", headers: "From: Frank <frank@gmail.example>\nARC-Seal: i=1; a=rsa-sha256\nDKIM-Signature: v=1; a=rsa-sha256; d=gmail.example\nX-Google-Smtp-Source: AGHT+", subject: "Question", verdict: "human", reason: null },
  { name: "Apple Mail with X-Mailer", headers: "From: gina@icloud.example\nX-Mailer: iPhone Mail (21A351)\nContent-Type: text/plain; charset=us-ascii", subject: "Refund", verdict: "human", reason: null },
  { name: "a web form submission sent on behalf of the customer", headers: "From: Forms <forms@webshop.example>\nReply-To: hank@customer.example\nSender: forms@webshop.example", subject: "Contact form: hank", verdict: "human", reason: null },
  { name: "a person forwarding their own vacation notice by hand", headers: "From: ivy@customer.example\nReturn-Path: <ivy@customer.example>", subject: "Fwd: Automatic reply: your order", verdict: "human", reason: null },
  { name: "a meeting request from Outlook", headers: "From: jan@customer.example\nContent-Class: urn:content-classes:calendarmessage\nContent-Type: multipart/alternative; boundary=x", subject: "Call about the contract", verdict: "human", reason: null },

  // Auto-replies.
  { name: "Exchange Online out-of-office", headers: "From: Kim <kim@customer.example>\nAuto-Submitted: auto-generated\nX-Auto-Response-Suppress: All\nX-MS-Exchange-Inbox-Rules-Loop: kim@customer.example\nReturn-Path: <>", subject: "Automatic reply: Your order 4711", verdict: "auto-reply", reason: /^Auto-Submitted: auto-generated$/ },
  { name: "Exchange 2010 OOF without Auto-Submitted", headers: "From: lea@customer.example\nX-Auto-Response-Suppress: All\nX-MS-Exchange-Organization-AutoResponseSuppress: All", subject: "Out of Office: Your order", verdict: "auto-reply", reason: /^X-Auto-Response-Suppress: All$/ },
  { name: "Outlook rules auto-reply (OOF, AutoReply)", headers: "From: max@customer.example\nX-Auto-Response-Suppress: OOF, AutoReply", subject: "Re: order", verdict: "auto-reply", reason: /X-Auto-Response-Suppress: OOF, AutoReply/ },
  { name: "Gmail vacation responder", headers: "From: nina@gmail.example\nAuto-Submitted: auto-replied\nPrecedence: bulk\nX-Autoreply: yes\nReturn-Path: <>", subject: "Vacation", verdict: "auto-reply", reason: /^Auto-Submitted: auto-replied$/ },
  { name: "Sieve vacation (Dovecot Pigeonhole)", headers: "From: otto@customer.example\nAuto-Submitted: auto-replied (vacation)\nPrecedence: bulk\nReturn-Path: <>", subject: "Auto: Your order", verdict: "auto-reply", reason: /^Auto-Submitted: auto-replied$/ },
  { name: "Auto-Submitted with parameters (RFC 3834 owner-email)", headers: 'From: pia@customer.example\nAuto-Submitted: auto-replied; owner-email="pia@customer.example"', subject: "Re: hi", verdict: "auto-reply", reason: /^Auto-Submitted: auto-replied$/ },
  { name: "Auto-Submitted in odd case with a comment", headers: "From: quinn@customer.example\nAuto-Submitted: Auto-Generated (ticket system)", subject: "Ticket #123 received", verdict: "auto-reply", reason: /Auto-Submitted: auto-generated/ },
  { name: "Auto-Submitted: auto-notified (Sieve notify)", headers: "From: notify@customer.example\nAuto-Submitted: auto-notified", subject: "New mail", verdict: "auto-reply", reason: /auto-notified/ },
  { name: "an unknown Auto-Submitted extension", headers: "From: bot@customer.example\nAuto-Submitted: auto-forwarded", subject: "fwd", verdict: "auto-reply", reason: /auto-forwarded/ },
  { name: "a helpdesk acknowledgement (Zendesk style)", headers: "From: Support <support@vendor.example>\nAuto-Submitted: auto-generated\nX-Mailer: Zendesk Mailer\nReply-To: support+id123@vendor.example", subject: "[Request received] Your order", verdict: "auto-reply", reason: /Auto-Submitted: auto-generated/ },
  { name: "X-Autoreply alone", headers: "From: rita@customer.example\nX-Autoreply: yes", subject: "Re: hello", verdict: "auto-reply", reason: /X-Autoreply: yes/ },
  { name: "X-Autorespond from cPanel", headers: "From: sam@customer.example\nX-Autorespond: Thank you", subject: "Re: hello", verdict: "auto-reply", reason: /X-Autorespond/ },
  { name: "X-Autogenerated: Reply (Novell GroupWise)", headers: "From: tom@customer.example\nX-Autogenerated: Reply", subject: "Re: hello", verdict: "auto-reply", reason: /X-Autogenerated: Reply/ },
  { name: "Precedence: auto_reply", headers: "From: uma@customer.example\nPrecedence: auto_reply", subject: "I am away", verdict: "auto-reply", reason: /Precedence: auto_reply/ },
  { name: "Unix vacation(1): Precedence: bulk with an away subject", headers: "From: vic@customer.example\nPrecedence: bulk", subject: "away from the office", verdict: "auto-reply", reason: /Precedence: bulk/ },
  { name: "a German Abwesenheitsnotiz with a null sender", headers: "From: walter@kunde.example\nReturn-Path: <>", subject: "Abwesenheitsnotiz: Ihre Bestellung", verdict: "auto-reply", reason: /Return-Path: <>/ },
  { name: "a French automatic reply answering our reply", headers: "From: xavier@client.example\nIn-Reply-To: <aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.postroom@acme.test>", subject: "Réponse automatique : Re: Votre commande", verdict: "auto-reply", reason: /in answer to a Postroom reply/ },
  { name: "Return-Path: <> alone", headers: "From: yara@customer.example\nReturn-Path: <>", subject: "Thanks for your mail", verdict: "auto-reply", reason: /Return-Path: <>/ },
  { name: "a procmail responder's own X-Loop", headers: "From: zack@customer.example\nX-Loop: zack@customer.example", subject: "Got your mail", verdict: "auto-reply", reason: /X-Loop: zack@customer.example \(stamped by another/ },
  { name: "an Outlook read receipt (MDN)", headers: 'From: amy@customer.example\nContent-Type: multipart/report; report-type=disposition-notification; boundary="r"', subject: "Read: Your order", verdict: "auto-reply", reason: /read receipt/ },
  { name: "an Exchange MDN by Content-Class", headers: "From: ben@customer.example\nContent-Class: urn:content-classes:mdn", subject: "Read: Your order", verdict: "auto-reply", reason: /Content-Class: urn:content-classes:mdn/ },
  { name: "Gmail MDN with a quoted report-type", headers: 'From: cat@gmail.example\nContent-Type: multipart/report; report-type="disposition-notification"; boundary=x', subject: "Read: hi", verdict: "auto-reply", reason: /disposition-notification/ },

  // Bounces.
  { name: "a Postfix DSN", headers: 'From: MAILER-DAEMON@mx.customer.example (Mail Delivery System)\nReturn-Path: <>\nAuto-Submitted: auto-replied\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary="ABC.1/mx"', subject: "Undelivered Mail Returned to Sender", verdict: "bounce", reason: /delivery-status/ },
  { name: "an Exchange Online NDR", headers: 'From: Microsoft Outlook <postmaster@customer.onmicrosoft.example>\nContent-Type: multipart/report; report-type="delivery-status"; boundary="_000_"\nX-MS-Exchange-Message-Is-Ndr:\nAuto-Submitted: auto-replied', subject: "Undeliverable: Your order", verdict: "bounce", reason: /delivery-status/ },
  { name: "a Gmail DSN", headers: 'From: Mail Delivery Subsystem <mailer-daemon@googlemail.example>\nContent-Type: multipart/report; boundary="000"; report-type=delivery-status\nAuto-Submitted: auto-replied', subject: "Delivery Status Notification (Failure)", verdict: "bounce", reason: /delivery-status/ },
  { name: "a delayed-delivery DSN in capitals", headers: "From: MAILER-DAEMON@relay.example\nContent-Type: MULTIPART/REPORT; REPORT-TYPE=DELIVERY-STATUS; BOUNDARY=x", subject: "Delayed Mail (still being retried)", verdict: "bounce", reason: /delivery-status/ },
  { name: "a qmail bounce without a report", headers: "From: MAILER-DAEMON@mail.example\nReturn-Path: <>\nContent-Type: text/plain", subject: "failure notice", verdict: "bounce", reason: /mailer-daemon@mail\.example with subject "failure notice"/ },
  { name: "an Exchange DSN by Content-Class", headers: "From: postmaster@customer.example\nContent-Class: urn:content-classes:dsn", subject: "Undeliverable: hi", verdict: "bounce", reason: /urn:content-classes:dsn/ },
  { name: "a German non-delivery report from an old server", headers: "From: postmaster@kunde.example\nContent-Type: text/plain; charset=iso-8859-1", subject: "Unzustellbar: Ihre Bestellung", verdict: "bounce", reason: /postmaster@kunde\.example/ },
  { name: "a mailer-daemon message with a null sender", headers: "From: Mailer-Daemon@old.example\nReturn-Path: <>", subject: "Warning: message delayed", verdict: "bounce", reason: /Return-Path: <>/ },
  { name: "a bounce of our own reply keeps being a bounce", headers: "From: MAILER-DAEMON@mx.customer.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\nTo: support@acme.test", subject: "Undelivered Mail Returned to Sender", verdict: "bounce", reason: /delivery-status/ },

  // Lists and mass mail.
  { name: "Mailman list post", headers: "From: dan@customer.example\nList-Id: Users of Widget <users.lists.widget.example>\nList-Unsubscribe: <mailto:users-leave@lists.widget.example>\nList-Post: <mailto:users@lists.widget.example>\nPrecedence: list\nSender: users-bounces@lists.widget.example", subject: "[users] widget broken", verdict: "bulk", reason: /^Precedence: list$/ },
  { name: "Precedence: list with List-Id", headers: "From: ed@customer.example\nPrecedence: list\nList-Id: <dev.example.org>", subject: "Re: build", verdict: "bulk", reason: /Precedence: list/ },
  { name: "Google Groups post", headers: "From: fay@customer.example\nList-Id: <team.googlegroups.example>\nMailing-list: list team@googlegroups.example\nList-Post: <mailto:team@googlegroups.example>", subject: "lunch", verdict: "bulk", reason: /^List-Id: <team\.googlegroups\.example>$/ },
  { name: "a newsletter with one-click unsubscribe (RFC 8058)", headers: "From: News <news@shop.example>\nList-Unsubscribe: <https://shop.example/u/1>, <mailto:u@shop.example>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\nPrecedence: bulk", subject: "50% off", verdict: "bulk", reason: /^Precedence: bulk$/ },
  { name: "a newsletter without Precedence", headers: "From: News <news@shop.example>\nList-Unsubscribe: <https://shop.example/u/2>", subject: "New arrivals", verdict: "bulk", reason: /^List-Unsubscribe: / },
  { name: "Precedence: junk", headers: "From: spam@bulk.example\nPrecedence: junk", subject: "WIN", verdict: "bulk", reason: /Precedence: junk/ },
  { name: "Precedence: bulk (never a loop)", headers: "From: marketing@partner.example\nPrecedence: bulk", subject: "Quarterly update", verdict: "bulk", reason: /^Precedence: bulk$/ },
  { name: "a human posting to a list saying Auto-Submitted: no", headers: "From: gus@customer.example\nAuto-Submitted: no\nList-Id: <ops.example.org>", subject: "outage?", verdict: "bulk", reason: /List-Id/ },
  { name: "ezmlm list mail with X-Loop of the list (list wins)", headers: "From: hal@customer.example\nMailing-List: contact list-help@lists.example; run by ezmlm\nList-Post: <mailto:list@lists.example>\nX-Loop: list@lists.example", subject: "hello list", verdict: "bulk", reason: /List-Post/ },

  // Loops.
  { name: "our own address in From", headers: "From: support@acme.test\nTo: ann@customer.example", subject: "Re: order", verdict: "loop", reason: /From is the mailbox's own address support@acme\.test/ },
  { name: "our own address in From, in capitals with a display name", headers: 'From: "ACME Support" <Support@ACME.Test>', subject: "hello", verdict: "loop", reason: /own address support@acme\.test/ },
  { name: "our own address plus-addressed", headers: "From: support+ticket-42@acme.test", subject: "hello", verdict: "loop", reason: /own address support\+ticket-42@acme\.test/ },
  { name: "an alias in From", headers: "From: Help Desk <help@acme.test>", subject: "hello", verdict: "loop", reason: /own address help@acme\.test/ },
  { name: "our own address in Sender", headers: "From: ann@customer.example\nSender: support@acme.test", subject: "hello", verdict: "loop", reason: /^Sender is the mailbox's own address/ },
  { name: "our own address in Return-Path", headers: "From: ann@customer.example\nReturn-Path: <SUPPORT@acme.test>", subject: "hello", verdict: "loop", reason: /^Return-Path is the mailbox's own address support@acme\.test/ },
  { name: "our own address in Reply-To", headers: "From: ann@customer.example\nReply-To: Support <support@acme.test>", subject: "hello", verdict: "loop", reason: /^Reply-To is the mailbox's own address/ },
  { name: "our own address among several in Reply-To", headers: "From: ann@customer.example\nReply-To: ann@customer.example, help@acme.test", subject: "hello", verdict: "loop", reason: /help@acme\.test/ },
  { name: "X-Loop naming our address", headers: "From: ann@customer.example\nX-Loop: support@acme.test", subject: "hello", verdict: "loop", reason: /^X-Loop: support@acme\.test$/ },
  { name: "X-Loop carrying our stamp", headers: "From: ann@customer.example\nX-Loop: acme/support", subject: "hello", verdict: "loop", reason: /^X-Loop: acme\/support$/ },
  { name: "our X-Postroom-Loop stamp echoed back by a forwarding address", headers: "From: Support <support@acme.test>\nX-Postroom-Loop: acme/support\nMessage-ID: <0123456789abcdef0123456789abcdef.postroom@acme.test>\nDelivered-To: ann@customer.example", subject: "Re: order", verdict: "loop", reason: /X-Postroom-Loop: acme\/support/ },
  { name: "our Message-ID back without the stamp (stripped by a relay)", headers: "From: ann@customer.example\nMessage-ID: <fedcba9876543210fedcba9876543210.postroom@acme.test>", subject: "Re: order", verdict: "loop", reason: /is one Postroom generated/ },
  { name: "another mailbox of ours forwarding to this one is not a loop", headers: "From: sales@acme-sales.test\nX-Postroom-Loop: acme/sales\nMessage-ID: <11111111111111111111111111111111.postroom@acme-sales.test>", subject: "Fwd: customer question", verdict: "human", reason: null },
  { name: "an Exchange inbox rule that sent our mail back", headers: "From: ann@customer.example\nX-MS-Exchange-Inbox-Rules-Loop: support@acme.test", subject: "FW: order", verdict: "loop", reason: /X-MS-Exchange-Inbox-Rules-Loop: support@acme\.test/ },
  { name: "our own auto-generated alert coming back in", headers: "From: support@acme.test\nAuto-Submitted: auto-generated\nX-Postroom-Loop: acme/support", subject: "Archive disk warning", verdict: "loop", reason: /X-Postroom-Loop/ },
  { name: "a folded Return-Path with our address", headers: "From: ann@customer.example\nReturn-Path:\n <support@acme.test>", subject: "hello", verdict: "loop", reason: /Return-Path/ },
];

function parse(block: string): HeaderList {
  const out: [string, string][] = [];
  for (const line of block.split("\n")) {
    if (/^[ \t]/.test(line) && out.length > 0) out[out.length - 1]![1] += `\r\n${line}`;
    else out.push([line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]);
  }
  return out;
}

test(`the classifier gives each of ${cases.length} real-world header sets its verdict and reason`, () => {
  assert.ok(cases.length >= 60, `${cases.length} cases`);
  assert.equal(new Set(cases.map((c) => c.name)).size, cases.length, "case names are unique");
  for (const verdict of ["human", "auto-reply", "bounce", "bulk", "loop"] as const) {
    assert.ok(cases.filter((c) => c.verdict === verdict).length >= 8, `at least 8 ${verdict} cases`);
  }
  const wrong: string[] = [];
  for (const c of cases) {
    const subject = c.subject ?? /^subject: (.*)$/im.exec(c.headers)?.[1] ?? "";
    const result = classifyAutomatic(parse(c.headers), MAILBOX, subject);
    const reasonOk = c.reason === null ? result.reason === null : result.reason !== null && c.reason.test(result.reason);
    if (result.classification !== c.verdict || !reasonOk) wrong.push(`${c.name}: got ${result.classification} (${result.reason}), want ${c.verdict} (${c.reason})`);
  }
  assert.deepEqual(wrong, []);
});

test("addresses are read without display names, comments or quoted text", () => {
  assert.deepEqual(addressesIn('"Support, ACME (help@x)" <Support@ACME.test>, bob@x.example (Bob <b@c>)'), ["support@acme.test", "bob@x.example"]);
  assert.deepEqual(addressesIn("<>"), [""]);
  assert.deepEqual(addressesIn("<@relay.example:ann@customer.example>"), ["ann@customer.example"]);
});

test("Postroom's own Message-IDs are recognised, with or without angle brackets, and nothing else is", () => {
  assert.ok(isPostroomMessageId("<0123456789abcdef0123456789abcdef.postroom@acme.test>"));
  assert.ok(isPostroomMessageId("0123456789ABCDEF0123456789abcdef.postroom@acme.test"));
  assert.ok(!isPostroomMessageId("<0123456789abcdef.postroom@acme.test>"));
  assert.ok(!isPostroomMessageId("<1@customer.example>"));
});
