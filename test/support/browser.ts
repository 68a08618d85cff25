import { chromium, type BrowserContext } from "playwright-core";
import { tempDir, type TempDir } from "@postroom/testkit";

/** Debian's Chromium, headless, in a fresh profile, driven by playwright-core (it never downloads a browser). */
export async function launchChromium(prefix: string): Promise<{ browser: BrowserContext; close: () => Promise<void> }> {
  const profile: TempDir = tempDir(prefix);
  const browser = await chromium.launchPersistentContext(profile.path, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  return {
    browser,
    close: async () => {
      await browser.close().catch(() => undefined);
      await profile.remove();
    },
  };
}
