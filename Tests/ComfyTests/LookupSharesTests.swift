@testable import Comfy
import Testing

/// One owner's host lookups hold at most their share of the resolver's threads.
struct LookupSharesTests {
    @Test func anOwnerHasAtMostItsShareRunningAndGetsItBackAsEachEnds() {
        let shares = LookupShares(perOwner: 2)
        #expect(shares.admit("key:a") && shares.admit("key:a"))
        #expect(!shares.admit("key:a"), "its share is running")
        #expect(shares.admit("key:b"), "another owner has a share of its own")
        shares.done("key:a")
        #expect(shares.admit("key:a"))
        for owner in ["key:a", "key:a", "key:b"] { shares.done(owner) }
        #expect(shares.total == 0)
    }

    @Test func theAddressesOfOneIPv6NetworkAreOneOwner() async {
        #expect(AddressShare.name(of: "2001:db8:0:1::1") == AddressShare.name(of: "2001:db8:0:1:ffff::2"))
        #expect(AddressShare.name(of: "2001:db8:0:1::1") != AddressShare.name(of: "2001:db8:0:2::1"))
        #expect(AddressShare.name(of: "192.0.2.7") == "192.0.2.7")
        #expect(AddressShare.name(of: "key:studio") == "key:studio")
        // Through the checks: a share of lookups taken by one of its addresses is the network's.
        for _ in 0..<OutboundURL.lookups.perOwner { #expect(OutboundURL.lookups.admit(AddressShare.name(of: "2001:db8:0:9::1"))) }
        await #expect(throws: OutboundURL.Refusal.self) {
            try await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:9::2")
        }
        let other = try? await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:a::1")
        #expect(other != nil)
        for _ in 0..<OutboundURL.lookups.perOwner { OutboundURL.lookups.done(AddressShare.name(of: "2001:db8:0:9::1")) }
        let again = try? await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:9::2")
        #expect(again != nil, "given back, the share is there again")
    }
}
