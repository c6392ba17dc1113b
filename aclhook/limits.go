package aclhook

// publishLimits is a rule's qos and retain restrictions as bit sets, or a publish's QoS and retain flag as
// single bits. The zero value restricts nothing; anyPublish is a request whose QoS and retain are unknown
// (mochi's OnACLCheck does not say), which every rule permits: the hook checks them again in OnPublish.
type publishLimits struct {
	qos    uint8 // bit q: QoS q allowed (a rule) or used (a publish); 0 = any
	retain uint8 // bit 0: not retained, bit 1: retained; 0 = any
}

var anyPublish = publishLimits{}

func limitsOf(r Rule) publishLimits {
	var l publishLimits
	for _, q := range r.QoS {
		l.qos |= 1 << q
	}
	if r.Retain != nil {
		l.retain = 1
		if *r.Retain {
			l.retain = 2
		}
	}
	return l
}

func publishOf(qos byte, retain bool) publishLimits {
	p := publishLimits{qos: 1 << (qos & 3), retain: 1}
	if retain {
		p.retain = 2
	}
	return p
}

// permit reports whether a rule with limits l allows the publish p.
func (l publishLimits) permit(p publishLimits) bool {
	return (l.qos == 0 || p.qos == 0 || l.qos&p.qos != 0) && (l.retain == 0 || p.retain == 0 || l.retain&p.retain != 0)
}
