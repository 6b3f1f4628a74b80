@testable import Comfy
import Testing

/// Threads for callers' host lookups and fetches, shared out among their owners.
struct OwnerSharesTests {
    @Test func anOwnerAtItsShareWaitsForItsOwnPlaceToFreeAndGivesUpAtItsDeadline() async {
        let shares = OwnerShares(perOwner: 2, capacity: 10)
        #expect(await shares.acquire("key:a", by: .now + .seconds(5)))
        #expect(await shares.acquire("key:a", by: .now + .seconds(5)))
        #expect(await !shares.acquire("key:a", by: .now + .milliseconds(50)), "its share is running: it waits, and gives up")
        #expect(await shares.acquire("key:b", by: .now + .milliseconds(50)), "another owner has a place of its own")
        async let third = shares.acquire("key:a", by: .now + .seconds(10))
        try? await Task.sleep(for: .milliseconds(50))
        shares.done("key:a")
        #expect(await third, "the freed place went to the one waiting")
        for owner in ["key:a", "key:a", "key:b"] { shares.done(owner) }
        #expect(shares.total == 0)
    }

    @Test func aFreedPlaceGoesToTheWaitingOwnerRunningTheFewest() async {
        // Every place is taken by one busy owner; a second asks before the busy one asks again.
        let shares = OwnerShares(perOwner: 3, capacity: 3)
        for _ in 0..<3 { #expect(await shares.acquire("busy", by: .now + .seconds(1))) }
        async let busyAgain = shares.acquire("busy", by: .now + .seconds(10))
        try? await Task.sleep(for: .milliseconds(30))
        async let newcomer = shares.acquire("newcomer", by: .now + .seconds(10))
        try? await Task.sleep(for: .milliseconds(30))
        shares.done("busy")
        #expect(await newcomer, "it runs none: it goes first, though it asked later")
        shares.done("busy")
        #expect(await busyAgain)
        for owner in ["busy", "busy", "newcomer"] { shares.done(owner) }
        #expect(shares.total == 0)
    }

    @Test func theAddressesOfOneIPv6NetworkAreOneOwner() {
        #expect(AddressShare.name(of: "2001:db8:0:1::1") == AddressShare.name(of: "2001:db8:0:1:ffff::2"))
        #expect(AddressShare.name(of: "2001:db8:0:1::1") != AddressShare.name(of: "2001:db8:0:2::1"))
        #expect(AddressShare.name(of: "192.0.2.7") == "192.0.2.7")
        #expect(AddressShare.name(of: "::ffff:192.0.2.7") == "192.0.2.7", "a proxy's mapped IPv4 client is that client, not one /64 of all")
        #expect(AddressShare.name(of: "key:studio") == "key:studio")
    }

    @Test func aCheckWhoseOwnerHasNoPlaceInTimeIsRefusedAndTheNetworksOtherAddressesWaitToo() async throws {
        let network = AddressShare.name(of: "2001:db8:0:9::1")
        for _ in 0..<OutboundURL.lookups.perOwner { #expect(await OutboundURL.lookups.acquire(network, by: .now + .seconds(1))) }
        await #expect(throws: OutboundURL.Refusal.self) {
            try await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:9::2", resolveTimeout: .milliseconds(100))
        }
        #expect(try await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:a::1").url == "http://localhost:9/hook")
        for _ in 0..<OutboundURL.lookups.perOwner { OutboundURL.lookups.done(network) }
        #expect(try await OutboundURL.check("http://localhost:9/hook", allowPrivate: true, owner: "2001:db8:0:9::2").url == "http://localhost:9/hook")
    }
}
