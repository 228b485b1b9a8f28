import { describe, expect, it } from "vitest";
import { canonicalPrefix, parsePrefix, prefixContains } from "../../provider/cidr";

describe("canonicalPrefix", () => {
  it.each([
    ["10.0.0.1", "10.0.0.1/32"],
    ["10.1.2.3/8", "10.0.0.0/8"],
    [" 192.0.2.0/24 ", "192.0.2.0/24"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["2001:DB8::1", "2001:db8::1/128"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1/128"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001/32", "2001:db8::/32"],
    ["fe80::1:2/64", "fe80::/64"],
    ["::", "::/128"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1/128"],
    ["1:0:0:1:0:0:0:1", "1:0:0:1::1/128"],
  ])("%s -> %s", (input, expected) => {
    expect(canonicalPrefix(input)).toBe(expected);
  });

  it.each(["10.0.0.256", "10.0.0.0/33", "2001:db8::g", "2001:db8:::1", "10.0.0.0/-1", "10.0.0.0/", "", "example.com", "fe80::1%eth0", "2001:db8::/129", "1.2.3"])(
    "rejects %j",
    (input) => {
      expect(() => canonicalPrefix(input)).toThrow(/not an IPv4 or IPv6|prefix length/);
    },
  );

  it("knows containment", () => {
    expect(prefixContains(parsePrefix("10.0.0.0/8"), parsePrefix("10.9.9.9"))).toBe(true);
    expect(prefixContains(parsePrefix("10.0.0.0/8"), parsePrefix("11.0.0.1"))).toBe(false);
    expect(prefixContains(parsePrefix("0.0.0.0/0"), parsePrefix("1.2.3.4"))).toBe(true);
    expect(prefixContains(parsePrefix("2001:db8::/32"), parsePrefix("10.0.0.1"))).toBe(false);
  });
});
