//! Analytic gradients of the Pareto/NBD and MBG/NBD objectives
//! (pareto_nbd_fit.rs, mbgnbd_fit.rs): per customer against
//! tests/reference/btyd_pareto_mbg.py (`gradients`: mpmath's numerical
//! derivatives of the 40-digit likelihoods, the Pareto/NBD one by quadrature
//! of its integral form), the objectives against central differences of the
//! public likelihoods (`fit::NumericObjective`), ln 2F1(1, b; c; z) with its
//! derivatives, and objectives and fits that are the same to the bit
//! whatever the number of threads.

use super::bgnbd::BgNbdParams;
use super::data::{Rfm, checked_rfm};
use super::fit::NumericObjective;
use super::mbgnbd::MbgNbd;
use super::mbgnbd_fit::{self, MbgObjective};
use super::optim::Objective;
use super::pareto_nbd::{ParetoNbd, ParetoNbdParams};
use super::pareto_nbd_fit::{self, ParetoObjective, ln_f1_grad};
use super::test_support::{CUSTOMERS, assert_rel, rfm, simulate_mbgnbd, simulate_pareto_nbd};

// `gradients` section of tests/reference/btyd_pareto_mbg.py, as printed:
// "-- name (parameters)" then per customer (x, t_x, T, [ln L, p dlnL/dp for
// each parameter p in order]).
const PARETO_GRADIENTS: &str = "
-- cdnow (0.5533, 10.5776, 0.6061, 11.665)
(0.0, 0.0, 38.86, [-0.5212259800283443, -0.4728809245942868, 0.2789652038414212, 0.2162623728563813, -0.15061789363283404]),
(1.0, 30.43, 38.86, [-6.106609354582313, 0.15343072614864547, 0.2167234600742055, -0.7616062459299656, 0.4338997487813511]),
(2.0, 1.71, 38.86, [-6.982793003455174, 1.0642076038265869, -1.0474228133222387, 0.635264918736817, -0.4164602949410713]),
(5.0, 10.0, 40.0, [-14.616092532733429, 1.3765914895807563, -1.8522122134765138, 0.47340285569886575, -0.11830248489153783]),
(10.0, 35.0, 38.5, [-27.012226683270733, 1.3824157081142132, -1.7274868539490567, -0.8187972191372517, 0.4493347761584067]),
(3.0, 20.5, 39.0, [-12.058915299586708, 0.7950646928702855, -0.3314382414067637, -0.35106196722209093, 0.301453619534378]),
(0.0, 0.0, 5.0, [-0.19133323495899823, -0.18989617491112432, 0.15867437603779067, 0.021050047558449397, -0.01884108286554494]),
(300.0, 2990.0, 3000.0, [-997.5723257727501, 0.9820988108706532, -0.5026946672846143, -3.362610652506555, 0.6037389822051438]),
-- alpha_gt_beta (0.55, 12.0, 0.6, 8.0)
(0.0, 0.0, 38.86, [-0.4329390384540216, -0.3898942226339129, 0.24193951491503812, 0.21769213975732765, -0.14056530637221049]),
(1.0, 30.43, 38.86, [-6.245247422389334, 0.2125102339253177, 0.17947011011286323, -0.9248570905417148, 0.4718171933878824]),
(2.0, 1.71, 38.86, [-6.994268091105766, 1.1009478950701899, -1.1388289707489323, 0.574846738032706, -0.319289464853624]),
(5.0, 10.0, 40.0, [-14.854472373053483, 1.4136271347983658, -2.0217032929942036, 0.3458449934484094, 0.01872105379171238]),
(10.0, 35.0, 38.5, [-27.42059412018545, 1.435289273745588, -1.963977527850835, -0.986924976742172, 0.48435290555018756]),
(3.0, 20.5, 39.0, [-12.233377016224317, 0.8515615703220716, -0.4246602396945528, -0.4952033079130514, 0.36593283509573205]),
(0.0, 0.0, 5.0, [-0.16421338160704432, -0.16274257878578008, 0.138696157879415, 0.024501913338600252, -0.021073362270134923]),
(300.0, 2990.0, 3000.0, [-997.8424945362983, 1.0529543918635416, -0.6474183055773729, -3.5543251362328943, 0.5983951196801925]),
-- alpha_eq_beta (0.55, 10.0, 0.6, 10.0)
(0.0, 0.0, 38.86, [-0.512669167297128, -0.46183574857925985, 0.2718537448343121, 0.22680689955399844, -0.15402128838817275]),
(1.0, 30.43, 38.86, [-6.179874911071504, 0.1343340119524958, 0.22855186710231892, -0.8213603197237197, 0.44767447254836445]),
(2.0, 1.71, 38.86, [-6.874092836370164, 1.06771116253977, -1.0532319667569165, 0.6310678487492091, -0.3945491214400266]),
(5.0, 10.0, 40.0, [-14.511983180308627, 1.3627296835863938, -1.7966064320031552, 0.4370091913024785, -0.06941458959873413]),
(10.0, 35.0, 38.5, [-26.987718226065983, 1.3572684556268027, -1.6315043625903298, -0.8800859054360473, 0.4618106188322835]),
(3.0, 20.5, 39.0, [-12.090233749825506, 0.7767600421222947, -0.3020655539366258, -0.39515317808776124, 0.32397612532789727]),
(0.0, 0.0, 5.0, [-0.19629980567550645, -0.19458029668641172, 0.1614256996999071, 0.02433969272379014, -0.02147070270321763]),
(300.0, 2990.0, 3000.0, [-997.6096503427168, 0.9530428645117208, -0.448511613462643, -3.4208387667419338, 0.5979952357579108]),
-- alpha_near_beta (0.55, 10.0, 0.6, 10.00000001)
(0.0, 0.0, 38.86, [-0.5126691674511493, -0.46183574873568356, 0.27185374490629677, 0.22680689950988855, -0.154021288385779]),
(1.0, 30.43, 38.86, [-6.1798749106238295, 0.1343340119509835, 0.2285518671032524, -0.821360319275695, 0.44767447243449454]),
(2.0, 1.71, 38.86, [-6.874092836764714, 1.0677111624747597, -1.0532319666111032, 0.6310678488524993, -0.39454912165067374]),
(5.0, 10.0, 40.0, [-14.511983180378042, 1.362729683570693, -1.7966064319485524, 0.4370091916122015, -0.06941458995564025]),
(10.0, 35.0, 38.5, [-26.987718225604173, 1.35726845562648, -1.631504362589019, -0.8800859049739937, 0.4618106187257809]),
(3.0, 20.5, 39.0, [-12.09023374950153, 0.776760042106695, -0.30206555391158635, -0.3951531777300661, 0.3239761251530499]),
(0.0, 0.0, 5.0, [-0.19629980569697716, -0.19458029670905122, 0.1614256997174872, 0.02433969270612452, -0.021470702689801776]),
(300.0, 2990.0, 3000.0, [-997.6096503421188, 0.9530428645117208, -0.448511613462643, -3.4208387661439383, 0.5979952357559127]),
-- s_one (0.8, 5.0, 1.0, 3.0)
(0.0, 0.0, 38.86, [-0.4456142706535296, -0.3555782116274893, 0.24121775997591088, 0.36065629305358243, -0.22725744853666768]),
(1.0, 30.43, 38.86, [-8.107256637301308, -0.7149835955712398, 0.5886388845599283, -2.3699289261376433, 0.9068361358840553]),
(2.0, 1.71, 38.86, [-5.266211807744002, 1.0211839758594508, -0.8923085220281717, 0.23691368879818225, 0.02892686328463987]),
(5.0, 10.0, 40.0, [-13.396962957994878, 1.1126459158717505, -0.8898740798940353, -0.6333057077528805, 0.6034970871032154]),
(10.0, 35.0, 38.5, [-27.460873406126385, 0.91249699528515, -0.449568413922342, -2.4892366126497967, 0.9172290910530658]),
(3.0, 20.5, 39.0, [-12.974728300976441, 0.21801874886122288, 0.2144251899376183, -1.5933343200039944, 0.8207030739190485]),
(0.0, 0.0, 5.0, [-0.3242485837964839, -0.3031006978333988, 0.23406949835831517, 0.15010612426065473, -0.11492153224336694]),
(300.0, 2990.0, 3000.0, [-1000.8189825998945, 0.21696573755641843, 0.29949526836988916, -6.903025059216968, 0.9989952638792191]),
";
const MBG_GRADIENTS: &str = "
-- cdnow (0.243, 4.414, 0.793, 2.426)
(0.0, 0.0, 38.86, [-0.38695222057085343, -0.35349288702366016, 0.13905741381281478, 0.11639686396116872, -0.11639686396116872]),
(1.0, 30.43, 38.86, [-5.963317036702518, 0.4575303964739403, 0.10907936927391532, -0.20176532710719167, 0.2147788913123126]),
(2.0, 1.71, 38.86, [-7.209239371621693, 1.0850504330249828, -1.2834948487237625, 0.3487602661120599, -0.04977319634356836]),
(5.0, 10.0, 40.0, [-14.617821867492603, 1.1416243365298304, -1.3354452037450395, 0.05489492848826177, 0.2742134478918876]),
(10.0, 35.0, 38.5, [-27.351716731327485, 1.0606767254783065, -0.8229459433077713, -1.146932808906983, 0.65357072906999]),
(3.0, 20.5, 39.0, [-12.41549732372978, 0.8116937560447847, -0.2016758059638235, -0.2442602894422432, 0.30982359955197913]),
(0.0, 0.0, 5.0, [-0.1354696926325253, -0.13213315333891282, 0.09265583422094913, 0.03573907159189521, -0.03573907159189521]),
(300.0, 2990.0, 3000.0, [-998.5209959523471, 0.8580298109284216, -0.19811895227719317, -3.728205986062272, 0.8173907579272458]),
-- generator (1.5, 5.217857142857143, 3.0, 50.0)
(0.0, 0.0, 38.86, [-2.3535868880057436, -1.294228228698789, 0.5347183431768976, 0.5390517635189448, -0.5390517635189448]),
(1.0, 30.43, 38.86, [-6.6014117858295736, -2.1718592743951946, 1.1976919791214455, -0.02124668166719437, 0.021939957979306358]),
(2.0, 1.71, 38.86, [-5.972357551116131, 1.1026721258683705, -1.0783573166608103, 0.8073073261472087, -0.7730325486394962]),
(5.0, 10.0, 40.0, [-12.661716852824698, 1.0041984173845855, -0.7061998435950626, 0.660149833724065, -0.5854446204836927]),
(10.0, 35.0, 38.5, [-25.016647561513334, 0.36857135503512484, 0.1136486303943786, -0.45520227700325727, 0.4259364290148943]),
(3.0, 20.5, 39.0, [-11.72507891801614, -0.8571699980496433, 0.8187028812274137, 0.17314936226983552, -0.15709956185690316]),
(0.0, 0.0, 5.0, [-0.9141215488288973, -0.8657320852819461, 0.6303649443397531, 0.08459903319793541, -0.08459903319793541]),
(300.0, 2990.0, 3000.0, [-999.8585068918516, -1.0279822883846257, 0.9764758593408063, -5.698287640921646, 2.512523539343928]),
";
// (b, c, z, [ln F, dlnF/db, dlnF/dc, dlnF/dz]) of F = 2F1(1, b; c; z)
const F1_GRADIENTS: &str = "
(0.55, 2.15, 0.0, [0.0, 0.0, 0.0, 0.2558139534883721]),
(0.55, 2.15, 0.3, [0.08683677327481047, 0.16061651147260445, -0.0434597470282955, 0.3302416388216387]),
(1.6, 2.15, 0.5, [0.49915118621239135, 0.34223013702687227, -0.26431148573497604, 1.3924102653519241]),
(300.55, 302.15, 0.9, [2.2572468820177227, 0.027738680036454313, -0.02759562300878838, 9.519831451149647]),
(1.6, 13.2, 0.97, [0.13561434999178068, 0.09073065736512158, -0.011858807777600913, 0.16452137134023714]),
(0.55, 2.15, 0.999, [0.6314626160936035, 1.5397320308277258, -0.6962519574236085, 11.046448469981666]),
(1.6, 2.6, 0.9995, [2.402026552380707, 3.5056361144311876, -3.004511090596186, 288.25387018269714]),
(0.25, 1.75, 0.99999, [0.4035738806487101, 1.9738611571066285, -0.6464706306913058, 94.40179192057373]),
";

/// The numbers of a line of the reference output, in order.
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .filter(|s| !s.is_empty() && s.chars().any(|c| c.is_ascii_digit()))
        .map(|s| s.parse().unwrap())
        .collect()
}

/// (name, parameters, customers ([x, t_x, T], [ln L, 4 elasticities])).
type GradientCase = (String, [f64; 4], Vec<([f64; 3], [f64; 5])>);

fn cases(text: &str) -> Vec<GradientCase> {
    let mut out: Vec<GradientCase> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(head) = line.strip_prefix("-- ") {
            let (name, params) = head.split_once(' ').unwrap();
            let v = numbers(params);
            out.push((name.into(), [v[0], v[1], v[2], v[3]], Vec::new()));
        } else {
            let v = numbers(line);
            assert_eq!(v.len(), 8, "{line}");
            let last = out.last_mut().unwrap();
            last.2.push(([v[0], v[1], v[2]], [v[3], v[4], v[5], v[6], v[7]]));
        }
    }
    out
}

/// `obj` over one customer (weight 1, no penalty, time scaled by 1/T) at
/// natural parameters `p` (α, β in the data's units): [ln L, p dlnL/dp...],
/// ln L unscaled (+ x ln scale).
fn one_customer<O: Objective>(obj: &O, scale: f64, p: [f64; 4], time_params: &[usize], x: f64) -> [f64; 5] {
    let theta: Vec<f64> = (0..4)
        .map(|i| {
            if time_params.contains(&i) {
                (p[i] * scale).ln()
            } else {
                p[i].ln()
            }
        })
        .collect();
    let mut g = [0.0; 4];
    let f = obj.eval(&theta, &mut g);
    [-f + x * scale.ln(), -g[0], -g[1], -g[2], -g[3]]
}

/// |got - want| <= tol max(1, |want|), naming `what`.
#[track_caller]
fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got:e}, want {want:e}, diff {:e}",
        got - want
    );
}

#[test]
fn pareto_nbd_gradient_matches_the_reference_per_customer() {
    let cases = cases(PARETO_GRADIENTS);
    assert_eq!(cases.len(), 5);
    for (name, p, customers) in cases {
        assert_eq!(customers.len(), 8);
        for ([x, t_x, t], want) in customers {
            let rows = rfm(&[(x, t_x, t, 1.0)]);
            let obj = ParetoObjective::new(&rows, 0.0);
            let got = one_customer(&obj, obj.scale, p, &[1, 3], x);
            let what = format!("{name} ({x}, {t_x}, {t})");
            assert_rel(got[0], want[0], 1e-12, &format!("{what} ln L"));
            for k in 1..5 {
                assert_close(got[k], want[k], 1e-12, &format!("{what} elasticity {k}"));
            }
        }
    }
}

#[test]
fn mbgnbd_gradient_matches_the_reference_per_customer() {
    let cases = cases(MBG_GRADIENTS);
    assert_eq!(cases.len(), 2);
    for (name, p, customers) in cases {
        for ([x, t_x, t], want) in customers {
            let rows = rfm(&[(x, t_x, t, 1.0)]);
            let obj = MbgObjective::new(&rows, 0.0);
            let got = one_customer(&obj, obj.scale, p, &[1], x);
            let what = format!("{name} ({x}, {t_x}, {t})");
            assert_rel(got[0], want[0], 1e-12, &format!("{what} ln L"));
            for k in 1..5 {
                assert_close(got[k], want[k], 1e-12, &format!("{what} elasticity {k}"));
            }
        }
    }
}

/// The weighted objective over the 8 customers (several per (x, t) pair and
/// frequency group) is the weighted mean of the reference values.
#[test]
fn objectives_over_customers_match_the_reference() {
    let data = rfm(&CUSTOMERS);
    let rows = checked_rfm(&data).unwrap();
    let w: f64 = CUSTOMERS.iter().map(|c| c.3).sum();
    let xlns = |scale: f64| -> f64 { CUSTOMERS.iter().map(|c| c.3 * c.0 * scale.ln()).sum() };
    let check = |obj: &dyn Fn(&[f64], &mut [f64]) -> f64, scale: f64, text: &str, time_params: &[usize]| {
        for (name, p, customers) in cases(text) {
            let mut want = [0.0; 5];
            for (&(x, t_x, t, wt), ([cx, ctx, ct], v)) in CUSTOMERS.iter().zip(&customers) {
                assert_eq!((x, if x > 0.0 { t_x } else { 0.0 }, t), (*cx, *ctx, *ct));
                for k in 0..5 {
                    want[k] += wt * v[k];
                }
            }
            let theta: Vec<f64> = (0..4)
                .map(|i| {
                    if time_params.contains(&i) {
                        (p[i] * scale).ln()
                    } else {
                        p[i].ln()
                    }
                })
                .collect();
            let mut g = [0.0; 4];
            let f = obj(&theta, &mut g);
            assert_rel(f, -(want[0] - xlns(scale)) / w, 1e-12, &format!("{name} objective"));
            for k in 0..4 {
                assert_close(g[k], -want[k + 1] / w, 1e-12, &format!("{name} gradient {k}"));
            }
        }
    };
    let pareto = ParetoObjective::new(&rows, 0.0);
    check(&|t, g| pareto.eval(t, g), pareto.scale, PARETO_GRADIENTS, &[1, 3]);
    let mbg = MbgObjective::new(&rows, 0.0);
    check(&|t, g| mbg.eval(t, g), mbg.scale, MBG_GRADIENTS, &[1]);
}

/// The analytic gradient against central differences of the public
/// likelihood (summed row by row, with the series of the model's `ln_f1`),
/// with a penalty, at points on both sides of α = β and far from the optimum.
#[test]
fn analytic_gradients_match_central_differences() {
    let sample = super::bgnbd_fit::tests::lifetimes_sample();
    let truth = ParetoNbdParams {
        r: 0.55,
        alpha: 10.5,
        s: 0.6,
        beta: 12.0,
    };
    let simulated = simulate_pareto_nbd(5000, &truth, 11, 730);
    for data in [&sample, &simulated] {
        let rows = checked_rfm(data).unwrap();
        let analytic = ParetoObjective::new(&rows, 0.1);
        let numeric = NumericObjective::new(ParetoNbd, rows.clone(), 0.1);
        for theta in [
            [-0.2, -1.0, 0.5, -0.1],
            [-0.2, -0.1, 0.5, -1.0],
            [0.3, -1.2, -0.4, -1.2],
            [-1.5, 0.5, 1.5, 2.0],
        ] {
            gradients_agree(&analytic, &numeric, &theta);
        }
        let analytic = MbgObjective::new(&rows, 0.1);
        let numeric = NumericObjective::new(MbgNbd, rows.clone(), 0.1);
        for theta in [[0.1, -1.0, 0.2, 1.5], [-1.0, 0.5, -0.5, 0.1], [0.5, -2.0, 1.5, 4.0]] {
            gradients_agree(&analytic, &numeric, &theta);
        }
    }
}

#[track_caller]
fn gradients_agree<A: Objective, N: Objective>(analytic: &A, numeric: &N, theta: &[f64]) {
    let (mut ga, mut gn) = ([0.0; 4], [0.0; 4]);
    let fa = analytic.eval(theta, &mut ga);
    let fn_ = numeric.eval(theta, &mut gn);
    assert_close(fa, fn_, 1e-13, &format!("objective at {theta:?}"));
    for k in 0..4 {
        assert_close(ga[k], gn[k], 1e-8, &format!("d/dθ{k} at {theta:?}"));
    }
}

#[test]
fn ln_f1_and_its_derivatives_match_the_reference() {
    let mut n = 0;
    for line in F1_GRADIENTS.lines().filter(|l| !l.is_empty()) {
        let v = numbers(line);
        let (b, c, z) = (v[0], v[1], v[2]);
        let got = ln_f1_grad(b, c, z);
        // past 20000 terms (z >= 0.999 here) those in b and c are central differences
        let tol = if z >= 0.999 { 1e-9 } else { 1e-13 };
        assert_close(got[0], v[3], 1e-14, &format!("ln F({b}, {c}, {z})"));
        for k in 1..4 {
            assert_close(got[k], v[3 + k], tol, &format!("derivative {k} at ({b}, {c}, {z})"));
        }
        n += 1;
    }
    assert_eq!(n, 8);
}

/// Enough distinct triples for several chunks of rows and blocks of (x, t)
/// pairs: the objective, and the whole fit, are the same to the bit on 1 to
/// 7 threads.
#[test]
fn objectives_and_fits_do_not_depend_on_the_thread_count() {
    let truth = ParetoNbdParams {
        r: 0.55,
        alpha: 10.5,
        s: 0.6,
        beta: 12.0,
    };
    let rows = checked_rfm(&simulate_pareto_nbd(40_000, &truth, 5, 1095)).unwrap();
    assert!(rows.len() > 3 * super::fit::CHUNK, "{} rows", rows.len());
    let theta = [-0.5, -2.5, -0.4, -2.4];
    let bits = |f: f64, g: &[f64; 4]| (f.to_bits(), g.map(f64::to_bits));
    let mut pareto = ParetoObjective::new(&rows, 0.0);
    let mut mbg = MbgObjective::new(&rows, 0.0);
    let (mut want_p, mut want_m) = (None, None);
    for threads in 1..=7 {
        pareto.threads = threads;
        mbg.threads = threads;
        let mut g = [0.0; 4];
        let got = bits(pareto.eval(&theta, &mut g), &g);
        assert_eq!(*want_p.get_or_insert(got), got, "Pareto/NBD, {threads} threads");
        let got = bits(mbg.eval(&theta, &mut g), &g);
        assert_eq!(*want_m.get_or_insert(got), got, "MBG/NBD, {threads} threads");
    }
    pareto.threads = 1;
    let one = pareto_nbd_fit::fit_prepared(&pareto, &rows).unwrap();
    pareto.threads = 3;
    assert_eq!(pareto_nbd_fit::fit_prepared(&pareto, &rows).unwrap(), one);
    let mtruth = BgNbdParams {
        r: 1.5,
        alpha: 5.2,
        a: 3.0,
        b: 50.0,
    };
    let rows: Vec<Rfm> = checked_rfm(&simulate_mbgnbd(40_000, &mtruth, 6, 1095)).unwrap();
    let mut mbg = MbgObjective::new(&rows, 0.0);
    mbg.threads = 1;
    let one = mbgnbd_fit::fit_prepared(&mbg, &rows).unwrap();
    mbg.threads = 3;
    assert_eq!(mbgnbd_fit::fit_prepared(&mbg, &rows).unwrap(), one);
}
