import type { AutoFlags } from "@postroom/contracts";

/**
 * Recognises automatic mail so it can be kept out of agents' queues and never answered
 * automatically (mail loops). Inputs are lower-cased header names → raw values.
 */
export function detectAutomatic(headers: Map<string, string>, from: string, contentType: string): AutoFlags {
  const h = (name: string) => (headers.get(name) ?? "").toLowerCase().trim();
  const autoSubmitted = h("auto-submitted");
  const precedence = h("precedence");
  const bounce =
    /multipart\/report/i.test(contentType) && /report-type="?delivery-status/i.test(contentType)
      ? true
      : /^(mailer-daemon|postmaster)@/i.test(from.trim());
  const autoReply =
    !bounce &&
    ((autoSubmitted !== "" && autoSubmitted !== "no") ||
      precedence === "auto_reply" ||
      headers.has("x-autoreply") ||
      headers.has("x-autorespond") ||
      h("x-auto-response-suppress").includes("all"));
  const loop = headers.has("x-loop") || precedence === "bulk" || precedence === "junk";
  return { autoReply, bounce, loop };
}
