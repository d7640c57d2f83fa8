use super::*;

const GOOD: &str = r#"
[host]
name = "a"
underlay = { kind = "udp", bind = "10.0.0.1:9000" }
control = "/run/vnetp/a.sock"
dispatch = "adaptive"

[[link]]
name = "to-b"
peer = "10.0.0.2:9000"
encap = "vnetp"

[[link]]
name = "to-linux"
peer = "10.0.0.3"
encap = "vxlan"
vni = 42

[[interface]]
name = "vm0"
kind = "tap"
mac = "52:54:00:00:00:01"

[[interface]]
name = "vm1"
kind = "vhost-user"
socket = "/run/vnetp/vm1.sock"
mac = "52:54:00:00:00:03"

[[route]]
src = "any"
dst = "52:54:00:00:00:02"
to = { link = "to-b" }

[[route]]
src = "any"
dst = "52:54:00:00:00:01"
to = { interface = "vm0" }
from = { link = "to-b" }
"#;

fn err(text: &str) -> ConfigError {
    match parse("h.toml", text) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e,
    }
}

fn with(extra: &str) -> String {
    format!("{GOOD}\n{extra}")
}

#[test]
fn full_example_parses() {
    let c = parse("h.toml", GOOD).unwrap();
    assert_eq!(c.host.name, "a");
    assert_eq!(
        c.host.underlay,
        UnderlayConfig::Udp {
            bind: "10.0.0.1:9000".parse().unwrap()
        }
    );
    assert_eq!(
        c.host.control.as_deref(),
        Some(Path::new("/run/vnetp/a.sock"))
    );
    assert_eq!(
        c.links[1].peer,
        "10.0.0.3:4789".parse().unwrap(),
        "vxlan default port"
    );
    assert_eq!(c.links[1].encap, Encap::Vxlan { vni: 42 });
    assert_eq!(
        c.interfaces[0].kind,
        InterfaceKind::Tap {
            ifname: "vm0".into()
        }
    );
    assert_eq!(c.interfaces[0].mtu, 1500);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].from, Some(EndpointRef::Link("to-b".into())));
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = err(
        "[host]\nname = \"a\"\nunderlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }\ncolour = 1\n",
    );
    assert_eq!((e.line, e.column), (4, 1), "{e}");
    assert!(e.message.contains("colour"), "{e}");
    assert!(e.to_string().starts_with("h.toml:4:1: "), "{e}");
}

#[test]
fn syntax_error_has_position() {
    let e = err("[host\nname = 1\n");
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn bad_mac_points_at_value() {
    let text = GOOD.replace("mac = \"52:54:00:00:00:01\"", "mac = \"52:54:00:zz:00:01\"");
    let e = err(&text);
    let (line, _) = line_col(&text, text.find("52:54:00:zz").unwrap());
    assert_eq!(e.line, line);
    assert!(e.message.contains("invalid MAC"), "{e}");
}

#[test]
fn multicast_interface_mac_refused() {
    let e = err(&GOOD.replace("52:54:00:00:00:01\"\n", "01:00:5e:00:00:01\"\n"));
    assert!(e.message.contains("multicast"), "{e}");
}

#[test]
fn dangling_route_destination_refused() {
    let e = err(&with(
        "[[route]]\nsrc = \"any\"\ndst = \"any\"\nto = { link = \"nowhere\" }\n",
    ));
    assert!(e.message.contains("link:nowhere is not defined"), "{e}");
}

#[test]
fn dangling_route_source_refused() {
    let e = err(&with(
        "[[route]]\nsrc = \"any\"\ndst = \"any\"\nto = { link = \"to-b\" }\nfrom = { interface = \"vm9\" }\n",
    ));
    assert!(e.message.contains("interface:vm9 is not defined"), "{e}");
}

#[test]
fn route_to_needs_exactly_one_endpoint() {
    let e = err(&with(
        "[[route]]\nsrc = \"any\"\ndst = \"any\"\nto = { link = \"to-b\", interface = \"vm0\" }\n",
    ));
    assert!(e.message.contains("exactly one"), "{e}");
}

#[test]
fn duplicate_names_refused_across_kinds() {
    let e = err(&with(
        "[[link]]\nname = \"vm0\"\npeer = \"10.0.0.9:9000\"\n",
    ));
    assert!(
        e.message.contains("already used by a interface") || e.message.contains("already used"),
        "{e}"
    );
}

#[test]
fn duplicate_peer_refused() {
    let e = err(&with(
        "[[link]]\nname = \"again\"\npeer = \"10.0.0.2:9000\"\n",
    ));
    assert!(e.message.contains("already uses peer"), "{e}");
}

#[test]
fn vxlan_needs_vni_and_vnetp_refuses_it() {
    let e = err(&with(
        "[[link]]\nname = \"x\"\npeer = \"10.0.0.9\"\nencap = \"vxlan\"\n",
    ));
    assert!(e.message.contains("vni"), "{e}");
    let e = err(&with(
        "[[link]]\nname = \"x\"\npeer = \"10.0.0.9\"\nvni = 5\n",
    ));
    assert!(e.message.contains("only to encap"), "{e}");
    let e = err(&with(
        "[[link]]\nname = \"x\"\npeer = \"10.0.0.9\"\nencap = \"vxlan\"\nvni = 16777216\n",
    ));
    assert!(e.message.contains("VNI"), "{e}");
}

#[test]
fn bad_addresses_refused() {
    let e = err(&GOOD.replace("10.0.0.1:9000", "10.0.0.1"));
    assert!(e.message.contains("IP:PORT"), "{e}");
    let e = err(&with("[[link]]\nname = \"x\"\npeer = \"somewhere\"\n"));
    assert!(e.message.contains("peer address"), "{e}");
    let e = err(&with("[[link]]\nname = \"x\"\npeer = \"[fd00::9]:9000\"\n"));
    assert!(e.message.contains("IP family"), "{e}");
}

#[test]
fn unknown_kinds_refused_with_choices() {
    let e = err(&GOOD.replace("kind = \"udp\"", "kind = \"carrier-pigeon\""));
    assert!(e.message.contains("expected \"udp\""), "{e}");
    let e = err(&GOOD.replace("kind = \"tap\"", "kind = \"tun\""));
    assert!(e.message.contains("expected \"vhost-user\""), "{e}");
}

#[test]
fn raw_and_vfio_underlays_parse() {
    let t = GOOD.replace(
        "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        "underlay = { kind = \"af_xdp\", ifname = \"eth0\", ip = \"10.0.0.1\", port = 9000, gateway = \"10.0.0.254\" }",
    );
    let c = parse("h.toml", &t).unwrap();
    assert_eq!(c.host.underlay.kind_name(), "af_xdp");
    let t = GOOD.replace(
        "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        "underlay = { kind = \"vfio\", pci = \"0000:01:00.0\", ip = \"10.0.0.1\" }",
    );
    let c = parse("h.toml", &t).unwrap();
    assert!(matches!(
        c.host.underlay,
        UnderlayConfig::Vfio {
            port: 9000,
            mtu: 1500,
            ..
        }
    ));
    let vfio = |mtu: &str| {
        GOOD.replace(
            "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
            &format!("underlay = {{ kind = \"vfio\", pci = \"0000:01:00.0\", ip = \"10.0.0.1\", mtu = {mtu} }}"),
        )
    };
    let c = parse("h.toml", &vfio("9000")).unwrap();
    assert!(matches!(
        c.host.underlay,
        UnderlayConfig::Vfio { mtu: 9000, .. }
    ));
    for bad in ["1499", "9001", "-1"] {
        assert!(
            err(&vfio(bad))
                .message
                .contains("expected a NIC MTU 1500..=9000"),
            "{bad}"
        );
    }
    let t = GOOD.replace(
        "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        "underlay = { kind = \"af_packet\", ifname = \"eth0\", ip = \"10.0.0.1\", mtu = 9000 }",
    );
    assert!(err(&t).message.contains("key `mtu` does not apply"));
    let t = GOOD.replace(
        "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        "underlay = { kind = \"vfio\", pci = \"01:00.0\", ip = \"10.0.0.1\" }",
    );
    assert!(err(&t).message.contains("PCI address"));
}

#[test]
fn key_of_another_kind_refused() {
    let e = err(&GOOD.replace("kind = \"tap\"", "kind = \"tap\"\nsocket = \"/x\""));
    assert!(e.message.contains("does not apply"), "{e}");
}

#[test]
fn tap_name_too_long_for_kernel_needs_ifname() {
    let t = GOOD
        .replace("name = \"vm0\"", "name = \"a-very-long-interface-name\"")
        .replace(
            "interface = \"vm0\"",
            "interface = \"a-very-long-interface-name\"",
        );
    assert!(err(&t).message.contains("set `ifname`"));
    let t = t.replace("kind = \"tap\"", "kind = \"tap\"\nifname = \"vnt0\"");
    assert!(parse("h.toml", &t).is_ok());
}

#[test]
fn wrong_types_are_errors_not_panics() {
    for bad in [
        "[host]\nname = 5\n",
        "host = 5\n",
        "[host]\nname = \"a\"\nunderlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }\n[[link]]\nname = \"l\"\npeer = \"10.0.0.2:1\"\nvni = -1\nencap = \"vxlan\"\n",
        "[host]\nname = \"a\"\nunderlay = { kind = \"af_packet\", ifname = \"eth0\", ip = \"10.0.0.1\", port = 70000 }\n",
        "",
    ] {
        let _ = err(bad);
    }
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
}

#[test]
fn fault_section_parses_and_checks_probabilities() {
    let c = parse(
        "h.toml",
        &with("[host.fault]\ndrop = 0.01\nreorder = 0.02\ndelay_ms = 20\nseed = 9\n"),
    )
    .unwrap();
    let f = c.host.fault.unwrap();
    assert_eq!(
        (f.drop, f.reorder, f.duplicate, f.seed),
        (0.01, 0.02, 0.0, 9)
    );
    assert_eq!(
        (f.delay, f.jitter),
        (
            std::time::Duration::from_millis(20),
            std::time::Duration::ZERO
        )
    );
    assert!(
        err(&with("[host.fault]\njitter_ms = -1\n"))
            .message
            .contains("milliseconds")
    );
    assert!(
        err(&with("[host.fault]\ndrop = 1.5\n"))
            .message
            .contains("probability")
    );
    assert!(
        err(&with("[host.fault]\nflap_up_ms = 5\n"))
            .message
            .contains("both")
    );
    assert!(parse("h.toml", GOOD).unwrap().host.fault.is_none());
}

#[test]
fn zero_copy_threshold_is_a_vhost_user_key_with_a_checked_range() {
    let vu = "mac = \"52:54:00:00:00:03\"\n";
    let c = parse(
        "h.toml",
        &GOOD.replace(vu, &format!("{vu}zero_copy_threshold = 512\n")),
    )
    .unwrap();
    assert_eq!(c.interfaces[1].zero_copy_threshold, Some(512));
    assert_eq!(
        parse("h.toml", GOOD).unwrap().interfaces[1].zero_copy_threshold,
        None
    );
    let e = err(&GOOD.replace(vu, &format!("{vu}zero_copy_threshold = -1\n")));
    assert!(e.message.contains("0..=65535"), "{e}");
    let tap = "mac = \"52:54:00:00:00:01\"\n";
    let e = err(&GOOD.replace(tap, &format!("{tap}zero_copy_threshold = 512\n")));
    assert!(e.message.contains("zero_copy_threshold"), "{e}");
}

#[test]
fn shards_default_to_one_and_take_1_to_16() {
    assert_eq!(parse("h.toml", GOOD).unwrap().host.shards, 1);
    let with_shards = |n: &str| GOOD.replace("dispatch = \"adaptive\"", &format!("shards = {n}"));
    assert_eq!(parse("h.toml", &with_shards("4")).unwrap().host.shards, 4);
    assert_eq!(parse("h.toml", &with_shards("16")).unwrap().host.shards, 16);
    for bad in ["0", "17", "-1"] {
        let e = err(&with_shards(bad));
        assert!(e.message.contains("expected shards 1..=16"), "{bad}: {e}");
        // `shards = ` is on line 6 of GOOD; the value starts at column 10.
        assert_eq!((e.line, e.column), (6, 10), "{bad}: {e}");
    }
    let e = err(&with_shards("\"two\""));
    assert_eq!(e.line, 6, "{e}");
}

#[test]
fn more_than_one_shard_needs_the_udp_underlay() {
    let raw = GOOD.replace(
        "underlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        "underlay = { kind = \"af_packet\", ifname = \"eth0\", ip = \"10.0.0.1\" }",
    );
    let one = raw.replace("dispatch = \"adaptive\"", "shards = 1");
    assert_eq!(parse("h.toml", &one).unwrap().host.shards, 1);
    let two = raw.replace("dispatch = \"adaptive\"", "shards = 2");
    let e = err(&two);
    assert_eq!(
        e.message,
        "shards > 1 needs the udp underlay (af_packet, af_xdp and vfio underlays run one shard)"
    );
    assert_eq!((e.line, e.column), (6, 10), "{e}");
}

#[test]
fn cpus_pin_one_cpu_per_shard_each_at_most_once() {
    let with = |shards: u32, cpus: &str| {
        GOOD.replace(
            "dispatch = \"adaptive\"",
            &format!("shards = {shards}\ncpus = {cpus}"),
        )
    };
    assert!(parse("h.toml", GOOD).unwrap().host.cpus.is_empty());
    assert_eq!(
        parse("h.toml", &with(2, "[3, 1]")).unwrap().host.cpus,
        vec![3, 1]
    );
    assert_eq!(parse("h.toml", &with(1, "[0]")).unwrap().host.cpus, vec![0]);
    // `cpus = ` is on line 7; the list starts at column 8, its second item at 12.
    let e = err(&with(2, "[0, 1, 2]"));
    assert_eq!(
        e.message,
        "cpus lists 3 CPU(s) for 2 shard(s): give one per shard"
    );
    assert_eq!((e.line, e.column), (7, 8), "{e}");
    let e = err(&with(2, "[1, 1]"));
    assert_eq!(
        e.message,
        "cpu 1 is listed twice: each shard needs its own CPU"
    );
    assert_eq!((e.line, e.column), (7, 12), "{e}");
    for bad in ["-1", "1024"] {
        let e = err(&with(2, &format!("[0, {bad}]")));
        assert_eq!(
            e.message,
            format!("expected a CPU number 0..=1023, got {bad}"),
            "{e}"
        );
        assert_eq!((e.line, e.column), (7, 12), "{e}");
    }
    let e = err(&with(1, "[\"0\"]"));
    assert_eq!(e.line, 7, "{e}");
}
