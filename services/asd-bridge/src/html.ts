import sanitizeHtml from "sanitize-html";

/**
 * Makes a customer's HTML safe to show an agent: no scripts, no event handlers, no forms or
 * frames, no remote content (images, stylesheets, fonts would tell the sender that and when the
 * mail was read, and could carry exploits). Inline images come as `data:` URLs or `cid:`
 * references, which `inline` maps to our own attachment URLs. Style attributes and <style> are
 * dropped too: CSS can fetch remote URLs (`background: url(...)`) and an allowlist of CSS
 * properties was more than the agent desktop needs.
 *
 * Rejected: writing our own tag filter (HTML parsing quirks are where sanitizers fail) and
 * DOMPurify with jsdom (a whole DOM on the server for the same result). The desktop also shows
 * the result in a sandboxed iframe without scripts, under a strict CSP: defence in depth.
 */
export function sanitizeEmailHtml(html: string, inline: (cid: string) => string | undefined = () => undefined): string {
  return sanitizeHtml(html, {
    allowedTags: [
      ...sanitizeHtml.defaults.allowedTags.filter((t) => t !== "style"),
      "img", "font", "center", "u", "s", "strike", "small", "big", "sub", "sup",
    ],
    allowedAttributes: {
      a: ["href", "title", "name", "target", "rel"],
      img: ["src", "alt", "title", "width", "height"],
      td: ["colspan", "rowspan", "align", "valign", "width"],
      th: ["colspan", "rowspan", "align", "valign", "width"],
      table: ["width", "border", "cellpadding", "cellspacing", "align"],
      font: ["color", "size", "face"],
      "*": ["dir", "lang"],
    },
    allowedSchemes: ["http", "https", "mailto", "tel"],
    allowedSchemesByTag: { img: ["data", "cid"] },
    allowProtocolRelative: false,
    disallowedTagsMode: "discard",
    nonTextTags: ["script", "style", "textarea", "option", "noscript", "title", "head"],
    transformTags: {
      a: (tagName, attribs) => ({ tagName, attribs: { ...attribs, target: "_blank", rel: "noopener noreferrer nofollow" } }),
      img: (tagName, attribs) => {
        const src = attribs.src ?? "";
        if (src.toLowerCase().startsWith("cid:")) {
          const url = inline(src.slice(4).replace(/^<|>$/g, ""));
          // An inline part we do not have is dropped by the filter below, like a remote image.
          return { tagName, attribs: { ...attribs, src: url ?? "" } };
        }
        return { tagName, attribs };
      },
    },
    exclusiveFilter: (frame) => frame.tag === "img" && !/^(data:image\/|\/api\/)/i.test(frame.attribs.src ?? ""),
  });
}

/**
 * A text rendering of HTML for an email without a text part whose HTML is not shown: scripts,
 * styles and the head out, block ends as line breaks, tags out, the common entities decoded.
 * Every step is linear — no nesting is tracked and no pattern can backtrack over the whole body —
 * and only the first `maxChars` characters are read, so it is safe on the request path.
 */
export function htmlAsText(html: string, maxChars = 1_000_000): string {
  const cut = html.length > maxChars;
  const text = dropElements(html.slice(0, maxChars), ["script", "style", "head", "title"])
    .replace(/<br\b[^>]*>|<\/(p|div|tr|li|h[1-6]|table)\s*>/gi, "\n")
    .replace(/<\/t[dh]\s*>/gi, "\t")
    .replace(/<[^>]*>?/g, "")
    .replace(/&nbsp;/g, " ")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, "&")
    .split("\n")
    .map((line) => line.trimEnd())
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
  return cut ? `${text}\n[…]` : text;
}

/** Removes each `<name …>…</name>` (an unclosed one to the end) in one pass over the text. */
function dropElements(html: string, names: string[]): string {
  const lower = html.toLowerCase();
  // Next occurrence of each opening tag, found again only once the scan has passed it: linear.
  const next = new Map(names.map((n) => [n, lower.indexOf(`<${n}`)]));
  let out = "";
  let at = 0;
  for (;;) {
    let start = -1;
    let name = "";
    for (const n of names) {
      let i = next.get(n)!;
      if (i !== -1 && i < at) next.set(n, (i = lower.indexOf(`<${n}`, at)));
      if (i !== -1 && (start === -1 || i < start)) [start, name] = [i, n];
    }
    if (start === -1) return out + html.slice(at);
    out += html.slice(at, start);
    const end = lower.indexOf(`</${name}`, start);
    if (end === -1) return out;
    const close = lower.indexOf(">", end);
    at = close === -1 ? html.length : close + 1;
  }
}
