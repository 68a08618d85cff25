import assert from "node:assert/strict";
import { test } from "node:test";
import { readDeliveryReport } from "./dsn.js";

const status = (text: string) => ({ contentType: "message/delivery-status", content: Buffer.from(text.replaceAll("\n", "\r\n")) });

test("a Postfix DSN gives the bounced reply's Message-ID, the status and the remote server's words", () => {
  const report = readDeliveryReport(
    [
      status(
        "Reporting-MTA: dns; mx.acme.test\nX-Postfix-Queue-ID: 4F1C2\nArrival-Date: Tue,  3 Mar 2026 10:15:00 +0100 (CET)\n\nFinal-Recipient: rfc822; nobody@customer.example\nOriginal-Recipient: rfc822;nobody@customer.example\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.customer.example\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>: Recipient address\n    rejected: User unknown in virtual mailbox table\n",
      ),
      { contentType: "message/rfc822", content: Buffer.from("From: support@acme.test\r\nMessage-ID:\r\n <0123456789abcdef0123456789abcdef.postroom@acme.test>\r\nSubject: Re: order\r\n\r\nbody Message-ID: <not-this@x>\r\n") },
    ],
    "This is the mail system at host mx.acme.test.",
  );
  assert.deepEqual(report, {
    of: "<0123456789abcdef0123456789abcdef.postroom@acme.test>",
    status: "5.1.1",
    diagnostic: "550 5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown in virtual mailbox table",
  });
});

test("with several recipients the failed one is reported, and text/rfc822-headers is read like a whole message", () => {
  const report = readDeliveryReport(
    [
      status("Reporting-MTA: dns; mail.example\n\nFinal-Recipient: rfc822; ok@customer.example\nAction: delivered\nStatus: 2.0.0\n\nFinal-Recipient: rfc822; gone@customer.example\nAction: failed\nStatus: 5.2.1\nDiagnostic-Code: smtp; 550 5.2.1 mailbox disabled\n"),
      { contentType: "text/rfc822-headers", content: "Message-ID: <r2@acme.test>\r\nSubject: x\r\n" },
    ],
    null,
  );
  assert.deepEqual(report, { of: "<r2@acme.test>", status: "5.2.1", diagnostic: "550 5.2.1 mailbox disabled" });
});

test("an Exchange NDR with X-Display-Name diagnostics and a delayed Gmail DSN", () => {
  assert.deepEqual(
    readDeliveryReport(
      [
        status("Reporting-MTA: dns;AM0PR01MB.eurprd01.prod.outlook.example\nReceived-From-MTA: dns;AM0PR01MB\n\nFinal-recipient: RFC822; nobody@customer.example\nAction: failed\nStatus: 5.1.10\nDiagnostic-code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\nX-Display-Name: nobody\n"),
        { contentType: "message/rfc822", content: "Message-ID: <ex@acme.test>\r\n\r\n" },
      ],
      null,
    ),
    { of: "<ex@acme.test>", status: "5.1.10", diagnostic: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup" },
  );
  assert.deepEqual(
    readDeliveryReport([status("Reporting-MTA: dns; googlemail.example\n\nFinal-Recipient: rfc822; slow@customer.example\nAction: delayed\nStatus: 4.4.1\nWill-Retry-Until: Thu, 05 Mar 2026 10:15:00 -0800\n")], null),
    { of: null, status: "4.4.1", diagnostic: null },
  );
});

test("a qmail failure notice without a report: the Message-ID and status come from the quoted copy in the body", () => {
  const text = [
    "Hi. This is the qmail-send program at mail.example.",
    "I'm afraid I wasn't able to deliver your message to the following addresses.",
    "<gone@customer.example>:",
    "Sorry, no mailbox here by that name. (#5.1.1)",
    "--- Below this line is a copy of the message.",
    "",
    "Message-ID: <q1@acme.test>",
    "Subject: Re: order",
  ].join("\n");
  assert.deepEqual(readDeliveryReport([], text), { of: "<q1@acme.test>", status: "5.1.1", diagnostic: null });
  assert.equal(readDeliveryReport([], "nothing to see"), null);
});
