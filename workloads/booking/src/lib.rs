//! The booking domain. So far: free-slot computation over weekly availability in a
//! country's time zone, correct across daylight-saving changes. The HTTP service, the
//! appointment store and live slots follow (issue "Booking service").

pub mod slots;
